"""From measured cases to figures, targets, the table and results.json."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rich.table import Table

import scenetool
from bench.cases import Case


@dataclass(frozen=True)
class Figure:
    """One row of the table: a case's median or a ratio of two medians."""

    name: str
    title: str
    value: float | None
    unit: str  # "images/s", "s", "MiB", "ratio" or "percent"
    spread: tuple[float, float] | None = None  # min and max over the repeats
    note: str | None = None  # why there is no value


@dataclass(frozen=True)
class Target:
    figure: str
    op: str  # ">=", "<=" or "<"
    threshold: float
    text: str

    def check(self, value: float | None) -> bool | None:
        if value is None:
            return None
        if self.op == ">=":
            return value >= self.threshold
        return value <= self.threshold if self.op == "<=" else value < self.threshold


TARGETS = (
    Target("end_to_end_vs_ceiling", ">=", 0.85, ">= 85%"),
    Target("phone_end_to_end_vs_naive", ">=", 3.0, ">= 3x"),
    Target("memory_5x_vs_1x", "<=", 1.15, "<= 1.15x"),
    Target("memory_5x", "<", 500.0, "< 500 MiB"),
    Target("startup_version", "<", 0.3, "< 0.3 s"),
    Target("startup_classify_one", "<", 1.0, "< 1 s"),
    Target("ray_vs_local_5x", ">=", 0.9, ">= 0.9x"),
    Target("ceiling_vs_previous", ">=", 0.9, ">= 0.9x"),
)
# Ratios of medians: name -> (title, numerator, denominator, unit).
RATIOS = {
    "end_to_end_vs_ceiling": ("end to end / ceiling", "end_to_end", "ceiling", "percent"),
    "end_to_end_vs_naive": ("end to end / naive", "end_to_end", "naive", "ratio"),
    "phone_end_to_end_vs_naive": ("phone photos: end to end / naive", "phone_end_to_end",
                                  "phone_naive", "ratio"),
    "memory_5x_vs_1x": ("peak RSS: 5x / 1x", "memory_5x", "memory_1x", "ratio"),
    "phone_heic_vs_jpeg": ("phone photos: HEIC (thumbnail) / JPEG", "phone_heic",
                           "phone_heic_jpeg", "ratio"),
    "phone_heic_full_vs_jpeg": ("phone photos: HEIC (no thumbnail) / JPEG", "phone_heic_full",
                                "phone_heic_jpeg", "ratio"),
    "ray_vs_local_5x": ("Ray engine / local engine, 5x", "ray_5x", "local_5x", "ratio"),
    "ceiling_vs_previous": ("model speed: shipped / previous model", "ceiling",
                            "ceiling_previous", "ratio"),
}
# Table order: case names, ratio names and "shared_cores".
ORDER = (
    "ceiling", "ceiling_previous", "ceiling_vs_previous", "decode", "shared_cores",
    "end_to_end", "end_to_end_vs_ceiling", "naive",
    "end_to_end_vs_naive", "phone_end_to_end", "phone_naive", "phone_end_to_end_vs_naive",
    "phone_heic_jpeg", "phone_heic", "phone_heic_full", "phone_heic_vs_jpeg",
    "phone_heic_full_vs_jpeg",
    "memory_1x", "memory_5x", "memory_5x_vs_1x", "startup_version", "startup_info",
    "startup_classify_one", "local_5x", "ray_5x", "ray_vs_local_5x",
)


def _case_figure(case: Case) -> Figure:
    values = case.values
    spread = (min(values), max(values)) if values and not case.error else None
    return Figure(case.name, case.title, case.median, case.unit, spread,
                  case.error or case.skipped)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def shared_cores(ceiling: float | None, decode: float | None) -> float | None:
    """What end to end could reach if decoding and the model shared the cores perfectly.

    Each is measured using every core, so per image they cost 1/decode + 1/ceiling of the
    machine's time: on a machine with few cores this, not the ceiling, bounds end to end.
    """
    if not ceiling or not decode:
        return None
    return 1.0 / (1.0 / ceiling + 1.0 / decode)


def figures(cases: Mapping[str, Case]) -> dict[str, Figure]:
    out = {name: _case_figure(case) for name, case in cases.items()}
    medians = {name: f.value for name, f in out.items()}
    for name, (title, top, bottom, unit) in RATIOS.items():
        note = (out[top].note or out[bottom].note) if top in out and bottom in out else None
        out[name] = Figure(name, title, _ratio(medians.get(top), medians.get(bottom)), unit,
                           note=note)
    out["shared_cores"] = Figure(
        "shared_cores", "bound: decode and model sharing the cores",
        shared_cores(medians.get("ceiling"), medians.get("decode")), "images/s")
    return out


def check_targets(figs: Mapping[str, Figure]) -> list[dict]:
    checked = []
    for target in TARGETS:
        fig = figs.get(target.figure)
        value = fig.value if fig else None
        skipped = bool(fig and fig.value is None and fig.note and "skipped" in fig.note)
        checked.append({"figure": target.figure, "value": value, "op": target.op,
                        "threshold": target.threshold, "target": target.text,
                        "passed": None if skipped else bool(target.check(value))})
    return checked


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "scenetool": scenetool.__version__}
    for dist in ("onnxruntime", "numpy", "pillow", "pillow-heif"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """What the figures depend on. The load average says how busy the machine was."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "versions": _versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# -- output ---------------------------------------------------------------------------------

def number(value: float, unit: str) -> str:
    """The value alone, with as many digits as its unit deserves."""
    if unit == "percent":
        return f"{value:.0%}"
    if unit in ("ratio", "s"):
        return f"{value:.2f}"
    return f"{value:.1f}" if unit == "images/s" and value < 10 else f"{value:.0f}"


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    text = number(value, unit)
    if unit == "percent":
        return text
    return f"{text}x" if unit == "ratio" else f"{text} {unit}"


def table(figs: Mapping[str, Figure], checked: list[dict], title: str) -> Table:
    verdicts = {t["figure"]: t for t in checked}
    out = Table(title=title, title_justify="left")
    for header, justify in (("figure", "left"), ("median", "right"), ("min - max", "right"),
                            ("target", "right"), ("", "left")):
        out.add_column(header, justify=justify)  # type: ignore[arg-type]
    for name in ORDER:
        fig = figs.get(name)
        if fig is None:
            continue
        spread = (f"{number(fig.spread[0], fig.unit)} - {number(fig.spread[1], fig.unit)}"
                  if fig.spread and len(set(fig.spread)) > 1 else "")
        verdict = verdicts.get(name)
        mark = ""
        if verdict:
            mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]"}.get(verdict["passed"], "skip")
        median = show(fig.value, fig.unit) if fig.value is not None else (fig.note or "-")[:60]
        out.add_row(fig.title, median, spread, verdict["target"] if verdict else "", mark)
    return out


def failed_line(figs: Mapping[str, Figure], checked: list[dict]) -> str:
    failed = [t for t in checked if t["passed"] is False]
    if not failed:
        return "all targets met"
    return "targets failed: " + "; ".join(
        f"{figs[t['figure']].title} {show(t['value'], figs[t['figure']].unit)}"
        f" (target {t['target']})" for t in failed)


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
