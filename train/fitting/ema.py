"""Weight averaging: an exponential moving average (EMA) of every weight of the model.

The average covers the trainable weights and the BatchNorm statistics alike (as timm's
ModelEmaV2 does), so the averaged net is a complete model that can be evaluated and
exported on its own. It is updated after every optimizer step with

    decay_t = min(decay, (1 + t) / (10 + t))        t = the optimizer's step count

(the warm-up of TensorFlow's ExponentialMovingAverage), so early steps, whose weights are
far from where training ends, fade quickly, and a short smoke run still averages.

The run keeps the averaged model as `ema.keras` (written after every epoch, next to
`last.keras`); `--resume` reads it back, so a resumed run averages as an uninterrupted one
does, and `python -m train export RUN --checkpoint ema` exports it.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

EMA_CHECKPOINT = "ema.keras"


def decay_at(decay: float, step: int) -> float:
    """The decay used for the update after optimizer step `step` (0-based)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage(keras.callbacks.Callback):
    """Keeps `shadow`, the EMA of `model.weights`, updated after every training batch."""

    def __init__(self, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be between 0 and 1, not {decay}")
        self.decay = decay
        self.shadow: list[np.ndarray] | None = None

    def start(self, model: keras.Model, saved: Path | None = None) -> None:
        """Begin from the model's weights, or from a saved average (a resumed run)."""
        if saved is not None and saved.exists():
            self.shadow = [np.array(w, np.float32) for w in
                           keras.models.load_model(saved, compile=False).get_weights()]
        else:
            self.shadow = [np.array(w, np.float32) for w in model.get_weights()]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.shadow is None:
            self.start(self.model)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
        d = decay_at(self.decay, max(step, 0))
        for avg, w in zip(self.shadow, self.model.get_weights(), strict=True):
            avg *= d
            avg += (1.0 - d) * w

    def averaged(self, model: keras.Model) -> keras.Model:
        """A copy of `model` (uncompiled) holding the averaged weights."""
        if self.shadow is None:
            raise ValueError("no weights averaged yet")
        return with_weights(model, self.shadow)


def with_weights(model: keras.Model, weights: list[np.ndarray]) -> keras.Model:
    """A copy of `model` (uncompiled) holding `weights`."""
    copy = keras.models.clone_model(model)
    copy.set_weights(weights)
    return copy
