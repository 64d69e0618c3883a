"""The cases: what one repeat of each measures, and how a case keeps its repeats.

A case's `measure` runs it once and returns a Sample; `Case.run_once` records it, or the
error that stopped it (the other cases still run, and the report shows which failed).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np

from bench.measure import BenchError, child_env, python_module, run_command
from scenetool.errors import DecodeError
from scenetool.inputs.decode import load_image
from scenetool.metadata import ModelMeta
from scenetool.model import SceneModel


@dataclass(frozen=True)
class Sample:
    """One repeat: the figure in the case's unit, its wall time and peak RSS (if a process)."""

    value: float
    seconds: float
    peak_rss_mib: float | None = None


@dataclass
class Case:
    name: str
    title: str
    unit: str  # "images/s", "s" or "MiB"
    measure: Callable[[], Sample] | None = None
    images: int | None = None
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    def run_once(self) -> Sample | None:
        if self.measure is None or self.error or self.skipped:
            return None
        try:
            sample = self.measure()
        except BenchError as exc:
            self.error = str(exc)
            return None
        self.samples.append(sample)
        return sample

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.samples]

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.samples and not self.error else None

    def as_dict(self) -> dict:
        return {
            "title": self.title,
            "unit": self.unit,
            "median": self.median,
            "repeats": self.values,
            "seconds": [s.seconds for s in self.samples],
            "peak_rss_mib": [s.peak_rss_mib for s in self.samples],
            "images": self.images,
            "error": self.error,
            "skipped": self.skipped,
        }


# -- in-process cases -----------------------------------------------------------------------

def decode_into(paths: Sequence[str], meta: ModelMeta, threads: int,
                out: np.ndarray) -> list[bool]:
    """Decode every path into `out[i]` with the tool's loader on `threads` threads."""
    def one(i: int) -> bool:
        try:
            out[i] = load_image(paths[i], meta.image_size, meta.resize, meta.channel_order)
        except DecodeError:
            return False
        return True

    with ThreadPoolExecutor(threads, thread_name_prefix="bench-decode") as pool:
        return list(pool.map(one, range(len(paths))))


def decode_case(paths: Sequence[str], meta: ModelMeta, threads: int) -> Case:
    out = np.empty((len(paths), *meta.image_size, 3), np.uint8)

    def measure() -> Sample:
        started = time.perf_counter()
        ok = decode_into(paths, meta, threads, out)
        seconds = time.perf_counter() - started
        return Sample(sum(ok) / seconds, seconds)

    return Case("decode", f"decode: load_image, {threads} threads", "images/s", measure,
                len(paths))


def model_input(decoded: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """uint8 images as the model takes them: float32 in its value range, one array."""
    low, high = meta.value_range
    return (decoded.astype(np.float32) * np.float32((high - low) / 255.0)) + np.float32(low)


def decoded_input(paths: Sequence[str], meta: ModelMeta, threads: int) -> np.ndarray:
    """Every decodable path, decoded as `meta` says and ready for the model, in one array."""
    decoded = np.empty((len(paths), *meta.image_size, 3), np.uint8)
    ok = decode_into(paths, meta, threads, decoded)
    return model_input(decoded[np.asarray(ok)], meta)


def ceiling_case(model: SceneModel, images: np.ndarray, batch_size: int,
                 name: str = "ceiling", title: str = "ceiling: model alone") -> Case:
    """The model alone on `images` (already float32, contiguous): slices cost no copy."""
    model.predict(images[:batch_size])  # warm-up: the first run allocates

    def measure() -> Sample:
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            model.predict(images[start:start + batch_size])
        seconds = time.perf_counter() - started
        return Sample(len(images) / seconds, seconds)

    return Case(name, f"{title}, batch {batch_size}", "images/s", measure, len(images))


# -- cases that run a process ---------------------------------------------------------------

def stored_results(db: Path) -> int:
    """How many results a classify run left in its store."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])


def classify_case(name: str, title: str, folder: Path, images: int, model_path: Path,
                  workdir: Path, unit: str = "images/s", extra: Sequence[str] = ()) -> Case:
    """`scenetool classify FOLDER -q [extra]` with a fresh store per repeat, from start to
    exit (a Ray engine's start-up and shutdown included).

    With unit "MiB" the figure is the process's peak RSS instead of its throughput.
    """
    serial = count()
    env = child_env()

    def measure() -> Sample:
        store = workdir / f"{name}-{next(serial)}.db"
        cmd = python_module("scenetool", "classify", str(folder), "--store", str(store),
                            "--model", str(model_path), "-q", *extra)
        done = run_command(cmd, env, ok_codes=(0, 1))
        stored = stored_results(store)
        if stored != images:
            raise BenchError(f"{name}: {stored} results stored for {images} images")
        value = (done.peak_rss_mib or 0.0) if unit == "MiB" else images / done.seconds
        return Sample(value, done.seconds, done.peak_rss_mib)

    return Case(name, title, unit, measure, images)


def naive_case(name: str, title: str, folder: Path, images: int, model_path: Path) -> Case:
    env = child_env()

    def measure() -> Sample:
        done = run_command(python_module("bench.naive", str(model_path), str(folder)), env)
        reported = done.output.strip().splitlines()[-1:]
        if reported != [str(images)]:
            raise BenchError(f"{name}: the naive loop saw {reported} images, not {images}")
        return Sample(images / done.seconds, done.seconds, done.peak_rss_mib)

    return Case(name, title, "images/s", measure, images)


def startup_case(name: str, title: str, args: Callable[[], list[str]]) -> Case:
    """Wall time of one short scenetool command; `args` gives fresh arguments per repeat."""
    env = child_env()

    def measure() -> Sample:
        done = run_command(python_module("scenetool", *args()), env)
        return Sample(done.seconds, done.seconds, done.peak_rss_mib)

    return Case(name, title, "s", measure)


def derived_memory_case(source: Case) -> Case:
    """Peak RSS read off another case's repeats (the end-to-end runs measure it already)."""
    case = Case("memory_1x", "peak RSS: classify the folder", "MiB", images=source.images)
    case.samples = [Sample(s.peak_rss_mib or 0.0, s.seconds, s.peak_rss_mib)
                    for s in source.samples]
    case.error, case.skipped = source.error, source.skipped
    return case


def derived_throughput_case(name: str, title: str, source: Case) -> Case:
    """Throughput read off another case's repeats of the same command (memory_5x runs
    `classify` on the five-fold folder already)."""
    case = Case(name, title, "images/s", images=source.images)
    case.samples = [Sample((source.images or 0) / s.seconds, s.seconds, s.peak_rss_mib)
                    for s in source.samples]
    case.error, case.skipped = source.error, source.skipped
    return case
