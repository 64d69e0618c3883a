"""Side-by-side throughput of ONNX models: batch 32 through the runtime's own session.

Models are timed in rounds, each model once per round, so that all of them sample the
same stretch of time and their ratio holds when the machine's load drifts (two shared
cores drift a lot); the median of the rounds is reported. The input is random pixels at
each model's own image size: the model alone, without decoding, as `make bench`'s
ceiling measures it.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, process_time

import numpy as np

BATCH, THREADS, ROUNDS, WARMUP = 32, 2, 7, 1


@dataclass(frozen=True)
class Speed:
    path: Path
    image_size: tuple[int, int]
    images_per_second: float  # median over the rounds
    spread: tuple[float, float]  # slowest and fastest round
    # CPU seconds per second of its timed batches: about the intra-op threads when the model
    # had the cores to itself, fewer when other work shared them (then the speed is low)
    cores_used: float

    @property
    def ms_per_image(self) -> float:
        return 1000.0 / self.images_per_second


def throughputs(paths: Sequence[str | os.PathLike], batch: int = BATCH,
                threads: int = THREADS, rounds: int = ROUNDS) -> list[Speed]:
    """Images per second of every model in `paths`, timed in interleaved rounds."""
    from scenetool.model import SceneModel

    models = [SceneModel(p, threads=threads) for p in paths]
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 255, (batch, *m.image_size, 3)).astype(np.float32) for m in models]
    for model, x in zip(models, inputs, strict=True):
        for _ in range(WARMUP):
            model.predict_scored(x)
    times: list[list[float]] = [[] for _ in models]
    cpu = [0.0 for _ in models]
    for _ in range(rounds):
        for i, (model, x) in enumerate(zip(models, inputs, strict=True)):
            started, cpu_started = perf_counter(), process_time()
            model.predict_scored(x)
            times[i].append(perf_counter() - started)
            cpu[i] += process_time() - cpu_started
    return [Speed(m.path, m.image_size, batch / statistics.median(t),
                  (batch / max(t), batch / min(t)), c / sum(t))
            for m, t, c in zip(models, times, cpu, strict=True)]
