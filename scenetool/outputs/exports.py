"""The one writer behind every `--csv` and `--json` export, classify's and report's alike.

Columns are fixed and named: path,label,confidence,top_k,error,run_id,model_sha256. A
failed image has an empty label and confidence and its error. In CSV, top_k is JSON
text; in JSON Lines it is a list of {"label", "confidence"} objects.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import IO

from scenetool.paths import as_text
from scenetool.store import Row

COLUMNS = ("path", "label", "confidence", "top_k", "error", "run_id", "model_sha256")


def _record(row: Row) -> dict:
    return {
        "path": as_text(row.path),
        "label": row.label if row.error is None else None,
        "confidence": round(row.confidence, 6) if row.confidence is not None else None,
        "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in row.top_k],
        "error": row.error,
        "run_id": row.run_id,
        "model_sha256": row.model_sha256,
    }


class Exporter:
    """Write rows as CSV or JSON Lines to a file, or to stdout for `-`."""

    def __init__(self, target: str, fmt: str):
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt}")
        self.target, self.fmt = target, fmt
        self._own = target != "-"
        self.stream: IO[str] = (open(target, "w", newline="", encoding="utf-8")  # noqa: SIM115
                                if self._own else sys.stdout)
        if fmt == "csv":
            self._csv = csv.writer(self.stream, lineterminator="\n")
            self._csv.writerow(COLUMNS)

    def write(self, row: Row) -> None:
        record = _record(row)
        if self.fmt == "csv":
            record["top_k"] = json.dumps(record["top_k"]) if record["top_k"] else ""
            self._csv.writerow(["" if record[c] is None else record[c] for c in COLUMNS])
        else:
            self.stream.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if self._own:
            self.stream.close()
        else:
            self.stream.flush()
