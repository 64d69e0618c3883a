"""The HTML contact sheet: one self-contained file of thumbnails, grouped by class.

The file makes no network request when opened: thumbnails are JPEG data URIs, the style
and the script are inline, and a Content-Security-Policy meta tag forbids anything else.
Thumbnails are made in a thread pool (Pillow releases the GIL while decoding) and written
in order as they complete, so at most a window of them is held in memory however many
images there are.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

from PIL import Image

from scenetool import __version__, paths
from scenetool.constants import UNKNOWN
from scenetool.errors import DecodeError
from scenetool.fsutil import atomic_write
from scenetool.inputs.decode import open_rgb
from scenetool.store import Row, Run, Store

THUMB = 128  # the longest side of a thumbnail, in pixels
THUMB_QUALITY = 75

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Thumb:
    """A thumbnail as a data URI with its size, or the reason there is none."""

    uri: str | None = None
    width: int = 0
    height: int = 0
    error: str | None = None


def make_thumbnail(path: str, side: int = THUMB) -> Thumb:
    """A JPEG thumbnail no larger than side x side, EXIF orientation applied.

    Decoded by the classifier's own `open_rgb` at a reduced size where the format allows
    (a JPEG at a reduced DCT scale, a HEIC from its embedded thumbnail) of at least 1.5
    times `side` on both sides: twice the thumbnail along a 4:3 photo's long side, so the
    final resampling still has detail, and met by the 320x240 thumbnail a phone writes into
    its HEIC photos (which otherwise cost a full 12-megapixel decode). Any failure is a
    Thumb with the reason, never an exception: the file may have changed since it was
    classified.
    """
    try:
        im = open_rgb(path, (3 * side // 2, 3 * side // 2))
    except DecodeError as exc:
        return Thumb(error=str(exc))
    im.thumbnail((side, side), Image.BILINEAR)
    # Pixels only: a new image from the bytes, so no comment, EXIF, XMP or ICC profile of
    # the original (a place, a name, a camera serial) rides along into the sheet.
    pixels = Image.frombytes("RGB", im.size, im.tobytes())
    buffer = io.BytesIO()
    pixels.save(buffer, "JPEG", quality=THUMB_QUALITY)
    uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumb(uri, im.width, im.height)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int,
                window: int) -> Iterator[R]:
    """`fn` over `items` in a thread pool, yielded in input order, at most `window` pending."""
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    with ThreadPoolExecutor(threads, thread_name_prefix="thumb") as pool:
        while True:
            for item in iterator:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    break
            if not pending:
                return
            yield pending.popleft().result()


@dataclass
class Section:
    """One group of thumbnails: a class, or the low-confidence images."""

    key: str
    title: str
    label: str | None  # the class; None for the low-confidence section
    limit: int
    shown: list[Row] = field(default_factory=list)
    count: int = 0

    def add(self, row: Row) -> None:
        self.count += 1
        if len(self.shown) < self.limit:
            self.shown.append(row)

    @property
    def left_out(self) -> int:
        return self.count - len(self.shown)


@dataclass
class Sheet:
    """What one pass over the stored rows found: the sections, the failures and the totals."""

    low_threshold: float
    limit: int
    classes: dict[str, Section] = field(default_factory=dict)
    low: Section = field(init=False)
    low_by_label: dict[str, int] = field(default_factory=dict)
    failed: list[Row] = field(default_factory=list)
    total: int = 0
    shas: dict[str, None] = field(default_factory=dict)  # an ordered set

    def __post_init__(self) -> None:
        self.low = Section("low", f"Low confidence (below {self.low_threshold:.0%})", None,
                           self.limit)

    def add(self, row: Row) -> None:
        self.total += 1
        self.shas[row.model_sha256] = None
        if row.error:
            self.failed.append(row)
            return
        label = row.label or UNKNOWN
        section = self.classes.get(label)
        if section is None:
            section = self.classes[label] = Section(f"class-{len(self.classes)}", label, label,
                                                    self.limit)
        section.add(row)  # every image is in its class, so the counts match the report's
        if (row.confidence or 0.0) < self.low_threshold:
            self.low.add(row)  # and the doubtful ones again, together
            self.low_by_label[label] = self.low_by_label.get(label, 0) + 1

    def ordered_classes(self) -> list[Section]:
        """Classes by name, 'unknown' last."""
        return sorted(self.classes.values(), key=lambda s: (s.title == UNKNOWN, s.title))

    def sections(self) -> list[Section]:
        return [*self.ordered_classes(), *([self.low] if self.low.count else [])]

    @property
    def classified(self) -> int:
        return self.total - len(self.failed)


def esc(text: object) -> str:
    """Any text for HTML: control characters and stray bytes escaped (scenetool.paths),
    then HTML-quoted."""
    return paths.html_text(str(text))


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} KB"
    if n < 1_000_000_000:
        return f"{n / 1_000_000:.1f} MB"
    return f"{n / 1_000_000_000:.1f} GB"


def when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


STYLE = """
:root{--bg:#f6f6f4;--fg:#1d1d1f;--muted:#6b6b70;--card:#fff;--line:#dedede;--accent:#2f6fb0;
--low:#b26a00;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--fg)}
header{position:sticky;top:0;z-index:1;background:#23272e;color:#f2f2f2;padding:10px 18px;
box-shadow:0 1px 4px rgba(0,0,0,.3)}
header h1{font-size:18px;margin:0 0 2px}
header .meta{color:#c8c8cc;margin:0 0 8px}
header code{color:#fff}
#controls{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center}
#controls label{white-space:nowrap;cursor:pointer}
#controls button,#controls select{font:inherit;border-radius:4px;border:1px solid #555;
background:#353a42;color:#f2f2f2;padding:1px 8px}
main{padding:6px 18px 30px}
section{margin:14px 0 6px}
h2{font-size:16px;margin:0 0 6px;border-bottom:1px solid var(--line);padding-bottom:3px}
h2 .count{color:var(--muted);font-weight:normal;margin-left:6px}
#low h2{color:var(--low)}
#failed h2{color:var(--bad)}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:140px;background:var(--card);border:1px solid var(--line);
border-radius:6px;padding:5px;display:flex;flex-direction:column;align-items:center}
figure img,.ph{width:auto;height:auto;max-width:128px;max-height:128px;display:block}
.box{height:128px;display:flex;align-items:center;justify-content:center}
.ph{width:128px;height:96px;background:repeating-linear-gradient(45deg,#eee,#eee 8px,#e2e2e2 8px,
#e2e2e2 16px);color:var(--bad);font-size:11px;display:flex;align-items:center;
justify-content:center;text-align:center;padding:4px;border-radius:3px}
figcaption{width:100%;font-size:11px;display:flex;justify-content:space-between;gap:4px;
margin-top:3px}
figcaption .name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
figcaption .conf{color:var(--muted);flex:none}
figure.low .conf{color:var(--low);font-weight:600}
figcaption .lab{color:var(--accent)}
.note,.more{color:var(--muted);margin:6px 0 0}
table{border-collapse:collapse}
td,th{text-align:left;padding:2px 12px 2px 0;vertical-align:top}
td.reason{color:var(--bad)}
footer{color:var(--muted);padding:0 18px 18px;font-size:12px}
[hidden]{display:none!important}
html:not(.js) #controls{display:none}
"""

SCRIPT = """
(function () {
  var boxes = Array.prototype.slice.call(document.querySelectorAll('#controls input.cls'));
  function apply() {
    var on = {};
    boxes.forEach(function (b) { on[b.value] = b.checked; });
    document.querySelectorAll('section.class').forEach(function (s) {
      s.hidden = !on[s.getAttribute('data-label')];
    });
    document.querySelectorAll('#low figure').forEach(function (f) {
      f.hidden = !on[f.getAttribute('data-label')];
    });
  }
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  function all(state) { boxes.forEach(function (b) { b.checked = state; }); apply(); }
  document.getElementById('all').addEventListener('click', function () { all(true); });
  document.getElementById('none').addEventListener('click', function () { all(false); });
  var select = document.getElementById('sort');
  function sort() {
    var how = select.value;
    document.querySelectorAll('.grid').forEach(function (grid) {
      var items = Array.prototype.slice.call(grid.children);
      items.sort(function (a, b) {
        var ca = +a.getAttribute('data-conf'), cb = +b.getAttribute('data-conf');
        var d = how === 'asc' ? ca - cb : how === 'desc' ? cb - ca : 0;
        return d || (+a.getAttribute('data-i')) - (+b.getAttribute('data-i'));
      });
      items.forEach(function (x) { grid.appendChild(x); });
    });
  }
  select.addEventListener('change', sort);
  // #sort=asc or #sort=desc in the address opens the sheet sorted.
  var wanted = /^#sort=(asc|desc)$/.exec(location.hash);
  if (wanted) { select.value = wanted[1]; sort(); }
  apply();
  document.documentElement.className = 'js';
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page's policy: exactly its own inline style and script, by their SHA-256, and data:
# images; nothing else runs or loads (no 'unsafe-inline').
CSP = (f"default-src 'none'; img-src data:; style-src {_csp_hash(STYLE)}; "
       f"script-src {_csp_hash(SCRIPT)}; base-uri 'none'; form-action 'none'")


def _header(out: IO[str], sheet: Sheet, run: Run | None) -> None:
    if run is not None:
        title = f"Run {run.id}"
        origin = (f"run {run.id}, started {esc(when(run.started))}"
                  + ("" if run.finished else f" ({esc(run.state())})"))
    else:
        title = "All stored results"
        origin = "all stored results (latest per image)"
    shas = list(sheet.shas) or ([run.model_sha256] if run else [])
    models = ", ".join(f"<code>{esc(s[:12])}</code>" for s in shas) or "none"
    out.write(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"referrer\" content=\"no-referrer\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>scenetool contact sheet: {esc(title)}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n<header>\n"
        f"<h1>scenetool contact sheet: {esc(title)}</h1>\n"
        f"<p class=\"meta\">{origin} &middot; {'models' if len(shas) > 1 else 'model'} "
        f"{models} &middot; <span id=\"totals\">{plural(sheet.total, 'image')}: "
        f"{sheet.classified:,} classified in {plural(len(sheet.classes), 'class', 'classes')}, "
        f"{sheet.low.count:,} below {sheet.low_threshold:.0%} confidence, "
        f"{len(sheet.failed):,} failed</span></p>\n"
        "<nav id=\"controls\">\n<span>Show:</span>\n")
    for section in sheet.ordered_classes():
        n = section.count
        out.write(f"<label><input type=\"checkbox\" class=\"cls\" value=\"{esc(section.title)}\""
                  f" checked> {esc(section.title)} ({n:,})</label>\n")
    out.write("<button type=\"button\" id=\"all\">all</button>"
              "<button type=\"button\" id=\"none\">none</button>\n"
              "<label>Sort: <select id=\"sort\"><option value=\"\">file order</option>"
              "<option value=\"asc\">confidence, lowest first</option>"
              "<option value=\"desc\">confidence, highest first</option></select></label>\n"
              "</nav>\n</header>\n<main>\n")


def _figure(out: IO[str], row: Row, index: int, thumb: Thumb, low: bool) -> None:
    name = paths.basename(row.path)
    label = row.label or UNKNOWN
    confidence = row.confidence or 0.0
    if thumb.uri:
        picture = (f"<img src=\"{thumb.uri}\" width=\"{thumb.width}\" height=\"{thumb.height}\""
                   f" alt=\"{esc(name)}\" decoding=\"async\">")
    else:
        picture = f"<div class=\"ph\">cannot read: {esc(thumb.error)}</div>"
    caption = (f"<span class=\"name\" title=\"{esc(paths.as_text(row.path))}\">{esc(name)}</span>"
               + (f"<span class=\"lab\">{esc(label)}</span>" if low else "")
               + f"<span class=\"conf\">{confidence:.1%}</span>")
    classes = " ".join(c for c in ("low" if low else "", "missing" if not thumb.uri else "") if c)
    attr = f' class="{classes}"' if classes else ""
    out.write(f"<figure{attr} data-label=\"{esc(label)}\""
              f" data-conf=\"{confidence:.6f}\" data-i=\"{index}\">"
              f"<div class=\"box\">{picture}</div><figcaption>{caption}</figcaption></figure>\n")


def _failed(out: IO[str], failed: list[Row]) -> None:
    out.write(f"<section id=\"failed\"><h2>Failed <span class=\"count\">{len(failed):,}</span>"
              "</h2>\n<table><tr><th>file</th><th>reason</th></tr>\n")
    for row in failed:
        out.write(f"<tr><td class=\"file\" title=\"{esc(paths.as_text(row.path))}\">"
                  f"{esc(paths.basename(row.path))}</td>"
                  f"<td class=\"reason\">{esc(row.error)}</td></tr>\n")
    out.write("</table></section>\n")


def write_contact_sheet(store: Store, run: Run | None, target: str | os.PathLike,
                        limit: int = 2000, low_threshold: float = 0.5,
                        threads: int = 0) -> str:
    """Write the contact sheet of `run` (None: the latest result of every stored path).

    Each class gets a section of at most `limit` thumbnails (a note says how many more
    there are); images below `low_threshold` are also in a section of their own, captioned with
    their class, and failed files are listed with their reasons. The file is written
    under a temporary name and renamed into place, so a failed write leaves no half sheet.
    Returns a one-line description for the user; raises OSError when it cannot write.
    """
    sheet = Sheet(low_threshold, limit)
    for row in store.rows(run.id if run else None):
        sheet.add(row)
    sections = sheet.sections()
    threads = threads or min(os.cpu_count() or 2, 8)
    target = Path(target)
    unreadable = 0
    shown = (row.path for section in sections for row in section.shown)
    with atomic_write(target, "w", encoding="utf-8", newline="\n") as out, \
            closing(ordered_map(make_thumbnail, shown, threads, 4 * threads)) as thumbs:
        _header(out, sheet, run)
        for section in sections:
            unreadable += _section(out, section, sheet, thumbs)
        _footer(out, sheet, store)
    return _description(target, sheet, sections, unreadable)


def _section(out: IO[str], section: Section, sheet: Sheet, thumbs: Iterator[Thumb]) -> int:
    """Write one section, its thumbnails taken in turn from `thumbs`; returns how many of
    them could not be read."""
    is_low = section.label is None
    _section_heading(out, section, sheet, is_low)
    out.write("<div class=\"grid\">\n")
    unreadable = 0
    for index, row in enumerate(section.shown):
        thumb = next(thumbs)
        unreadable += thumb.uri is None
        _figure(out, row, index, thumb, is_low)
    out.write("</div>\n")
    if section.left_out:
        what = "low-confidence" if is_low else section.title
        out.write(f"<p class=\"more\">{section.left_out:,} more {esc(what)} "
                  f"{'image' if section.left_out == 1 else 'images'} not shown "
                  f"(--html-limit {sheet.limit:,})</p>\n")
    out.write("</section>\n")
    return unreadable


def _section_heading(out: IO[str], section: Section, sheet: Sheet, is_low: bool) -> None:
    """The section's opening tag and heading, and for a class the note on how many of its
    images are also under Low confidence."""
    if is_low:
        out.write("<section id=\"low\">")
    else:
        out.write(f"<section class=\"class\" id=\"{section.key}\""
                  f" data-label=\"{esc(section.label)}\">")
    out.write(f"<h2>{esc(section.title)} <span class=\"count\">{section.count:,}"
              "</span></h2>\n")
    low_here = 0 if is_low else sheet.low_by_label.get(section.title, 0)
    if low_here:
        out.write(f"<p class=\"note\">{low_here:,} of them below "
                  f"{sheet.low_threshold:.0%} confidence, also shown under "
                  "<a href=\"#low\">Low confidence</a></p>\n")


def _footer(out: IO[str], sheet: Sheet, store: Store) -> None:
    """Everything after the sections: the no-images note, the failed files, the footer
    and the script."""
    if not sheet.total:
        out.write("<p class=\"note\">No images.</p>\n")
    if sheet.failed:
        _failed(out, sheet.failed)
    out.write(f"</main>\n<footer>Made by scenetool {esc(__version__)} from "
              f"{esc(store.path)}. This file is self-contained: it loads nothing "
              f"from anywhere.</footer>\n<script>{SCRIPT}</script>\n</body></html>\n")


def _description(target: Path, sheet: Sheet, sections: list[Section], unreadable: int) -> str:
    """The one line that tells the user what was written."""
    left_out = sum(s.left_out for s in sections)
    notes = []
    if left_out:
        notes.append(f"{left_out:,} left out by --html-limit")
    if unreadable:
        notes.append(f"{unreadable:,} no longer readable")
    return (f"contact sheet: {target} ({plural(sheet.total, 'image')}, "
            f"{plural(len(sheet.classes), 'class', 'classes')}, "
            f"{human_size(target.stat().st_size)}"
            + ("; " + ", ".join(notes) if notes else "") + ")")
