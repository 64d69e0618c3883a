"""The learning-rate schedule, registered so `last.keras` loads with it on --resume."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable("scenetool")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup` steps, then a cosine down to zero at `total`.

    With `cycle` steps the cosine restarts at `peak` every `cycle` steps after the warm-up
    (warm restarts), so every cycle ends near zero: the points an epoch average (SWA) wants.
    """

    def __init__(self, peak: float, warmup: int, total: int, cycle: int = 0):
        self.peak, self.warmup, self.total = float(peak), int(warmup), int(total)
        self.cycle = int(cycle)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup, 1)
        since = step - self.warmup
        if self.cycle:
            progress = (since - self.cycle * ops.floor(since / self.cycle)) / self.cycle
        else:
            progress = ops.clip(since / max(self.total - self.warmup, 1), 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup, warm, cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total,
                "cycle": self.cycle}
