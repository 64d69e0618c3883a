"""Summaries of stored results: per-class counts and confidence, the doubtful and the failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from scenetool.store import Row


@dataclass
class ClassStats:
    count: int = 0
    confidence_sum: float = 0.0

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.count if self.count else 0.0


@dataclass
class Summary:
    """Built in one pass over the rows; keeps at most `keep` examples of each list."""

    low_threshold: float = 0.5
    keep: int = 20
    total: int = 0
    classes: dict[str, ClassStats] = field(default_factory=dict)
    low: list[Row] = field(default_factory=list)
    low_count: int = 0
    failed: list[Row] = field(default_factory=list)
    failed_count: int = 0

    def add(self, row: Row) -> None:
        self.total += 1
        if row.error:
            self.failed_count += 1
            if len(self.failed) < self.keep:
                self.failed.append(row)
            return
        stats = self.classes.setdefault(row.label or "", ClassStats())
        stats.count += 1
        stats.confidence_sum += row.confidence or 0.0
        if (row.confidence or 0.0) < self.low_threshold:
            self.low_count += 1
            if len(self.low) < self.keep:
                self.low.append(row)
