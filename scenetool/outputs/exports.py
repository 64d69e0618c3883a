"""The one writer behind every `--csv` and `--json` export, classify's and report's alike.

Columns are fixed and named: path,label,confidence,top_k,error,run_id,model_sha256. A
failed image has an empty label and confidence and its error. In CSV, top_k is JSON
text; in JSON Lines it is a list of {"label", "confidence"} objects.

Paths go through `scenetool.paths`: JSON has the exact path (a byte that is not UTF-8 as
\\udcNN), CSV the path as UTF-8 text (such a byte as \\xNN), every field holding a CR or
LF quoted (RFC 4180), so a file name cannot break a record. A target that cannot be
written (a full disk, /dev/full, a closed pipe) is an OutputError naming it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import IO

from scenetool.errors import OutputError
from scenetool.paths import as_text, csv_text
from scenetool.store import Row

COLUMNS = ("path", "label", "confidence", "top_k", "error", "run_id", "model_sha256")


def _record(row: Row, path: str) -> dict:
    return {
        "path": path,
        "label": row.label if row.error is None else None,
        "confidence": round(row.confidence, 6) if row.confidence is not None else None,
        "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in row.top_k],
        "error": row.error,
        "run_id": row.run_id,
        "model_sha256": row.model_sha256,
    }


def stdout_stream() -> IO[str]:
    """sys.stdout, or an OutputError when the process was started with it closed."""
    if sys.stdout is None:
        raise OutputError("cannot write to stdout: it is closed")
    return sys.stdout


def _csv_line(fields) -> str:
    """One CSV record ending in LF; a field with a CR or LF in it is quoted (the csv
    module quotes only the line terminator's characters, so it is asked for CRLF here)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue()[:-2] + "\n"


class Exporter:
    """Write rows as CSV or JSON Lines to a file, or to stdout for `-`."""

    def __init__(self, target: str, fmt: str):
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt}")
        self.target, self.fmt = target, fmt
        self._own = target != "-"
        self.stream: IO[str] | None = None
        try:
            self.stream = (open(target, "w", newline="", encoding="utf-8")  # noqa: SIM115
                           if self._own else stdout_stream())
            if fmt == "csv":
                self._put(_csv_line(COLUMNS))
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> OutputError:
        return OutputError.writing("stdout" if not self._own else self.target, exc)

    def _put(self, text: str) -> None:
        assert self.stream is not None
        self.stream.write(text)

    def write(self, row: Row) -> None:
        try:
            if self.fmt == "csv":
                record = _record(row, csv_text(row.path))
                record["top_k"] = json.dumps(record["top_k"]) if record["top_k"] else ""
                self._put(_csv_line(["" if record[c] is None else record[c] for c in COLUMNS]))
            else:
                self._put(json.dumps(_record(row, as_text(row.path))) + "\n")
        except OSError as exc:
            raise self._error(exc) from None

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        """Flush (and close a file); an error here is an OutputError too: the last rows
        may only reach the disk now."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        try:
            if self._own:
                stream.close()
            else:
                stream.flush()
        except OSError as exc:
            if self._own:
                try:
                    stream.close()
                except OSError:
                    pass
            raise self._error(exc) from None
