"""Rich output: the streaming results table and the summary tables.

The results table is printed in chunks with fixed column widths and no outer box, so it
reads as one table while memory stays flat however many rows there are. Every text that
comes from outside (paths, labels, reasons) goes in as `plain` Text: escaped by
`scenetool.paths`, never read as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scenetool.constants import NOT_A_SCENE, UNKNOWN
from scenetool.paths import escape, shown

if TYPE_CHECKING:  # annotations only: the tables load no numpy, onnxruntime or store
    from scenetool.evaluate import Scores
    from scenetool.job import Tally
    from scenetool.outputs.report import Summary
    from scenetool.store import Row, Run


def plain(text: object, style: str = "") -> Text:
    """Text shown literally: control characters escaped, never markup."""
    return Text(escape(str(text)), style=style)


def confidence_text(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


class ChunkedTable:
    """Rows printed a chunk at a time (header on the first chunk only), with fixed column
    widths and no outer box, so a long stream reads as one table while memory stays flat.
    Subclasses add the columns and rows of a chunk in `fill`."""

    CHUNK = 50

    def __init__(self, console: Console):
        self.console = console
        self.rows: list = []
        self.printed_header = False

    def add(self, row: object) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = Table(box=box.SIMPLE_HEAD, show_header=not self.printed_header, show_edge=False,
                      pad_edge=False)
        self.fill(table, self.rows)
        emit(self.console, table)
        self.printed_header = True
        self.rows = []

    def fill(self, table: Table, rows: list) -> None:
        raise NotImplementedError


class ResultTable(ChunkedTable):
    """The results of a classify run.

    Columns: path, label, confidence, and a details column that holds the runners-up
    (with --top-k) or, for a failed file, the reason. Without --top-k the details column
    is there only in chunks that have a failed file, so a table with nothing to note has no
    empty column; the other columns have fixed widths, so chunks line up either way.
    """

    def __init__(self, console: Console, labels: Sequence[str], top_k: int = 1):
        super().__init__(console)
        self.top_k = top_k
        self.label_width = max(max((len(x) for x in labels), default=5), len(UNKNOWN), 6) + 2
        self.conf_width = 10
        room = max(console.width - self.label_width - self.conf_width - 6, 40)
        self.path_width = max(room * 3 // 5, 20)
        self.details_width = max(room - self.path_width, 16)

    def fill(self, table: Table, rows: list[Row]) -> None:
        table.add_column("path", width=self.path_width, overflow="fold")
        table.add_column("label", width=self.label_width, overflow="fold")
        table.add_column("confidence", width=self.conf_width, justify="right")
        with_details = self.top_k > 1 or any(row.error or row.not_scene for row in rows)
        if with_details:
            table.add_column("runners-up" if self.top_k > 1 else "note",
                             width=self.details_width, overflow="fold")
        for row in rows:
            if row.error:
                label, details = Text("failed", style="red"), plain(row.error, style="red")
            else:
                label = plain(row.label or "", style="yellow" if row.label == UNKNOWN else "")
                # an unknown still names the scene it is closest to: its confidence is that one's
                closest = 0 if row.label == UNKNOWN else 1
                details = plain(", ".join(f"{lab} {p:.1%}" for lab, p in row.top_k[closest:]))
                if row.not_scene:
                    details = Text("; ").join([Text(NOT_A_SCENE, style="yellow"), details]) \
                        if details else Text(NOT_A_SCENE, style="yellow")
            cells = [plain(shown(row.path)), label, confidence_text(row.confidence)]
            table.add_row(*cells, *([details] if with_details else []))


def emit(console: Console, renderable: object) -> None:
    """Print to a terminal as rich does; to a pipe or a file without the spaces rich pads
    every line with up to the table's width."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as capture:
        console.print(renderable)
    console.file.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))
    console.file.flush()


def tally_table(tally: Tally, labels: Sequence[str]) -> Table:
    """Per-class counts of one classify run."""
    table = Table(title="Summary", box=box.SIMPLE_HEAD)
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    total = tally.total or 1
    for label in [*labels, UNKNOWN]:
        n = tally.labels.get(label, 0)
        if n or label != UNKNOWN:
            table.add_row(plain(label), str(n), f"{n / total:.1%}")
    if tally.failed:
        table.add_row(Text("failed", style="red"), str(tally.failed), f"{tally.failed / total:.1%}")
    table.add_row(Text("total", style="bold"), str(tally.total), "")
    return table


def run_header(run: Run | None, store_path: str, total: int) -> str:
    """The line above a report (print it with `say`, which escapes it)."""
    if run is None:
        return f"All stored results (latest per image) in {store_path}: {total} images"
    return (f"Run {run.id} in {store_path}: started {run.started}, {run.state()}; "
            f"model {run.model_sha256[:12]}; {total} images")


def summary_tables(summary: Summary) -> list[Table]:
    """Per-class counts with mean confidence, then the doubtful and the failed images."""
    tables = []
    table = Table(title="Per class", box=box.SIMPLE_HEAD)
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("mean confidence", justify="right")
    for label, stats in sorted(summary.classes.items()):
        table.add_row(plain(label), str(stats.count), f"{stats.mean_confidence:.1%}")
    if summary.failed_count:
        table.add_row(Text("failed", style="red"), str(summary.failed_count), "")
    table.add_row(Text("total", style="bold"), str(summary.total), "")
    tables.append(table)
    if summary.low_count:
        low = Table(title=f"Low confidence (below {summary.low_threshold:.0%}): "
                    f"{summary.low_count}" + (f", first {len(summary.low)} shown"
                                               if summary.low_count > len(summary.low) else ""),
                    box=box.SIMPLE_HEAD)
        low.add_column("path", overflow="fold")
        low.add_column("label")
        low.add_column("confidence", justify="right")
        runners_up = any(len(row.top_k) > 1 for row in summary.low)  # runs with --top-k > 1
        if runners_up:
            low.add_column("runners-up", overflow="fold")
        for row in summary.low:
            cells = [plain(shown(row.path)), plain(row.label or ""),
                     confidence_text(row.confidence)]
            if runners_up:
                cells.append(plain(", ".join(f"{lab} {p:.0%}" for lab, p in row.top_k[1:3])))
            low.add_row(*cells)
        tables.append(low)
    if summary.failed_count:
        failed = Table(title=f"Failed: {summary.failed_count}" + (
            f", first {len(summary.failed)} shown"
            if summary.failed_count > len(summary.failed) else ""), box=box.SIMPLE_HEAD)
        failed.add_column("path", overflow="fold")
        failed.add_column("reason", style="red", overflow="fold")
        for row in summary.failed:
            failed.add_row(plain(shown(row.path)), plain(row.error or ""))
        tables.append(failed)
    return tables


def scores_tables(scores: Scores) -> list[Table]:
    """Per-class precision, recall and F1, and the confusion matrix."""
    per = Table(title=f"Accuracy {scores.accuracy:.2%} on {scores.n} images", box=box.SIMPLE_HEAD)
    for column in ("label", "precision", "recall", "f1", "support"):
        per.add_column(column, justify="left" if column == "label" else "right")
    for label, m in scores.per_class().items():
        per.add_row(plain(label), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                    str(m["support"]))
    per.add_row("macro F1", "", "", f"{scores.macro_f1:.3f}", str(scores.n), style="bold")
    cm = Table(title="Confusion matrix (rows: true, columns: predicted)", box=box.SIMPLE_HEAD)
    cm.add_column("true \\ predicted")
    for label in scores.labels:
        cm.add_column(plain(label), justify="right")
    for i, label in enumerate(scores.labels):
        cm.add_row(plain(label), *(Text(str(v), style="bold green" if i == j else "")
                            for j, v in enumerate(scores.confusion[i])))
    return [per, cm]
