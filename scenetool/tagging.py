"""Tagging photos: a classify result becomes keywords in the photo's XMP sidecar.

Shared by `scenetool tag` and `scenetool classify --tag`. The sidecar format is
`scenetool.outputs.xmp`'s business; this module decides what goes in it (the top label, no
keyword below the minimum confidence), names the sidecar, and turns every per-photo problem
(an unreadable photo, a sidecar that is not XMP, a sidecar two photos would share) into a
failed outcome with a reason, never an exception that stops the run.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from scenetool.constants import UNKNOWN
from scenetool.errors import SidecarError
from scenetool.outputs import xmp
from scenetool.paths import shown
from scenetool.store import Row


@dataclass(frozen=True)
class Tagged:
    """What happened to one photo's sidecar. `outcome` is None when it failed (`reason`)."""

    path: str
    sidecar: str | None
    outcome: xmp.Outcome | None
    keyword: str | None = None  # the label written; None: no keyword
    confidence: float | None = None
    reason: str | None = None


@dataclass
class TagTally:
    outcomes: Counter = field(default_factory=Counter)  # by xmp.Outcome
    keywords: Counter = field(default_factory=Counter)  # by label written
    below: int = 0  # results under the minimum confidence: no keyword
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values()) + len(self.failed)


def keyword_of(row: Row) -> tuple[str | None, float | None]:
    """The label and confidence a stored result tags a photo with: its top label, also when
    an earlier run stored it as 'unknown' under its own --min-confidence."""
    if row.error or row.confidence is None:
        return None, None
    label = row.top_k[0][0] if row.top_k else row.label
    return (None if label == UNKNOWN else label), row.confidence


class Tagger:
    """Writes (or with `remove`, takes out) scenetool's keywords in each photo's sidecar."""

    def __init__(self, naming: str = "ext", min_confidence: float = 0.0, dry_run: bool = False):
        self.naming, self.min_confidence, self.dry_run = naming, min_confidence, dry_run
        self.tally = TagTally()
        self._claimed: dict[str, str] = {}  # sidecar -> the photo that used it in this run

    def _sidecar(self, path: str) -> str:
        """The photo's sidecar, or SidecarError when it has none of its own."""
        sidecar = xmp.sidecar_path(path, self.naming)
        if os.path.normcase(sidecar) == os.path.normcase(path):
            raise SidecarError("the photo's own name ends in .xmp: no sidecar name for it")
        first = self._claimed.setdefault(sidecar, path)
        if first != path:
            raise SidecarError(f"its sidecar {shown(sidecar)} is also {shown(first)}'s "
                               "(--sidecar-name stem); tag one of them at a time")
        return sidecar

    def tag(self, row: Row) -> Tagged:
        """Write the result's label into the photo's sidecar (none below the minimum
        confidence: scenetool's earlier keyword is then taken out)."""
        if row.error:
            return self.fail(row.path, None, row.error)
        label, confidence = keyword_of(row)
        if label is None or (confidence or 0.0) < self.min_confidence:
            label = None
            self.tally.below += 1
        tag = xmp.Tag(label, confidence or 0.0, row.model_sha256) if label else None
        return self._update(row.path, tag, label, confidence)

    def remove(self, path: str) -> Tagged:
        """Take scenetool's keywords out of the photo's sidecar."""
        return self._update(path, None, None, None)

    def _update(self, path: str, tag: xmp.Tag | None, label: str | None,
                confidence: float | None) -> Tagged:
        sidecar = None
        try:
            sidecar = self._sidecar(path)
            outcome = xmp.update(sidecar, tag, self.dry_run)
        except SidecarError as exc:
            where = "" if sidecar is None else f"sidecar {shown(sidecar)} "
            return self.fail(path, sidecar, f"{where}{exc}; left untouched")
        except OSError as exc:
            return self.fail(path, sidecar, f"sidecar {shown(sidecar or path)}: "
                                f"{exc.strerror or exc}")
        self.tally.outcomes[outcome] += 1
        if label:
            self.tally.keywords[label] += 1
        return Tagged(path, sidecar, outcome, label, confidence)

    def fail(self, path: str, sidecar: str | None, reason: str) -> Tagged:
        """Count a photo that could not be tagged."""
        self.tally.failed.append((path, reason))
        return Tagged(path, sidecar, None, reason=reason)
