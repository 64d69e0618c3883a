"""`scenetool report --html`: the contact sheet, parsed, and rendered in a headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import grey, invoke, make_image
from PIL import Image

from scenetool.outputs.html import CSP, make_thumbnail, ordered_map

NOT_AN_IMAGE = "not an image (unknown or corrupt format)"
ODD_NAME = 'odd <b>&amp; "quoted".jpg'


@dataclass
class Figure:
    section: str
    label: str
    conf: float
    name: str = ""
    src: str | None = None
    width: int = 0
    height: int = 0
    placeholder: str = ""


@dataclass
class Parsed:
    csp: str | None = None
    figures: list[Figure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # section -> count in its heading
    more: dict[str, str] = field(default_factory=dict)  # section -> "N more ... not shown"
    failed: list[tuple[str, str]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # every src and href
    totals: str = ""
    filters: list[str] = field(default_factory=list)

    def names(self, section: str) -> list[str]:
        return [f.name for f in self.figures if f.section == section]


class SheetParser(HTMLParser):
    """Collects what the tests check: sections, figures, counts, failures, URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = Parsed()
        self.section = ""
        self.stack: list[str] = []  # what text is being collected for
        self.cell: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if key in a:
                self.out.urls.append(a[key])
        cls = a.get("class", "").split()
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.out.csp = a["content"]
        elif tag == "section":
            self.section = a.get("data-label") or a["id"]
        elif tag == "figure":
            self.out.figures.append(Figure(self.section, a["data-label"], float(a["data-conf"])))
        elif tag == "img":
            fig = self.out.figures[-1]
            fig.src, fig.width, fig.height = a["src"], int(a["width"]), int(a["height"])
        elif tag == "input" and "cls" in cls:
            self.out.filters.append(a["value"])
        elif tag == "td":
            self.cell = []
        for wanted in ("count", "name", "ph", "more", "file", "reason"):
            if wanted in cls:
                self.stack.append(wanted)
                self.cell = []
        if a.get("id") == "totals":
            self.stack.append("totals")
            self.cell = []

    def handle_data(self, data: str) -> None:
        self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("span", "div", "p", "td") or not self.stack:
            return
        what, text = self.stack.pop(), "".join(self.cell)
        if what == "count":
            self.out.counts[self.section] = int(text.replace(",", ""))
        elif what == "name":
            self.out.figures[-1].name = text
        elif what == "ph":
            self.out.figures[-1].placeholder = text
        elif what == "more":
            self.out.more[self.section] = text
        elif what == "file":
            self.out.failed.append((text, ""))
        elif what == "reason":
            self.out.failed[-1] = (self.out.failed[-1][0], text)
        elif what == "totals":
            self.out.totals = text


def parse(path: Path) -> Parsed:
    parser = SheetParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.out


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_image(folder / "r1.jpg", "red", size=(300, 200))
    make_image(folder / "r2.png", "red")
    make_image(folder / ODD_NAME, "red")
    make_image(folder / "g1.png", "green")
    make_image(folder / "sub" / "b1.jpg", "blue")
    grey(folder / "grey.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def classify(folder: Path) -> None:
    assert invoke("classify", str(folder), "-q").exit_code == 1  # broken.jpg


def sheet_of(tmp_path: Path, *args: str) -> tuple[Path, str]:
    target = tmp_path / "sheet.html"
    result = invoke("report", "--html", str(target), *args)
    assert result.exit_code == 0, result.output
    return target, result.stderr.strip().splitlines()[-1]


def test_every_image_once_in_its_class_and_the_doubtful_again(photos, tmp_path):
    classify(photos)
    target, info = sheet_of(tmp_path)
    sheet = parse(target)
    assert sheet.names("red") == ["grey.png", ODD_NAME, "r1.jpg", "r2.png"]  # in walk order
    assert sheet.names("green") == ["g1.png"]
    assert sheet.names("blue") == ["b1.jpg"]
    assert sheet.names("low") == ["grey.png"]
    assert [f.label for f in sheet.figures if f.section == "low"] == ["red"]
    names = [f.name for f in sheet.figures if f.section != "low"]
    assert len(names) == len(set(names)) == 6
    assert sheet.counts == {"blue": 1, "green": 1, "red": 4, "low": 1, "failed": 1}
    assert sheet.filters == ["blue", "green", "red"]
    assert sheet.failed == [("broken.jpg", NOT_AN_IMAGE)]
    assert sheet.totals == ("7 images: 6 classified in 3 classes, 1 below 50% confidence, "
                            "1 failed")
    assert all(f.conf > 0.99 for f in sheet.figures if f.name != "grey.png")
    assert re.fullmatch(rf"contact sheet: {re.escape(str(target))} \(7 images, 3 classes, "
                        r"\d+\.\d KB\)", info), info
    text = target.read_text(encoding="utf-8")
    assert "odd &lt;b&gt;&amp;amp; &quot;quoted&quot;.jpg" in text  # escaped, never raw
    assert "<b>" not in text


def test_self_contained_with_a_strict_csp(photos, tmp_path):
    classify(photos)
    target, _ = sheet_of(tmp_path)
    sheet = parse(target)
    assert sheet.csp == CSP
    assert "default-src 'none'" in CSP and "img-src data:" in CSP
    assert sheet.urls, "no src or href at all"
    for url in sheet.urls:
        assert url.startswith(("data:image/jpeg;base64,", "#")), url[:60]
        assert not url.startswith("//")
    text = target.read_text(encoding="utf-8")
    assert "http:" not in text and "https:" not in text
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert "<script src" not in text


def test_thumbnails_are_small_jpegs_with_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    make_image(tmp_path / "photos" / "turned.jpg", "red", size=(400, 200), exif=exif)
    make_image(tmp_path / "photos" / "wide.jpg", "blue", size=(1000, 800))
    classify_ok = invoke("classify", str(tmp_path / "photos"), "-q")
    assert classify_ok.exit_code == 0
    target, _ = sheet_of(tmp_path)
    figures = {f.name: f for f in parse(target).figures}
    assert (figures["turned.jpg"].width, figures["turned.jpg"].height) == (64, 128)
    assert (figures["wide.jpg"].width, figures["wide.jpg"].height) == (128, 102)
    thumb = make_thumbnail(str(tmp_path / "photos" / "wide.jpg"))
    assert thumb.uri and thumb.uri.startswith("data:image/jpeg;base64,/9j/")  # JPEG magic


def test_html_limit_says_what_it_left_out(tmp_path):
    for i in range(5):
        make_image(tmp_path / "photos" / f"r{i}.jpg", "red")
    make_image(tmp_path / "photos" / "g.jpg", "green")
    for i in range(3):
        grey(tmp_path / "photos" / f"grey{i}.png")
    assert invoke("classify", str(tmp_path / "photos"), "-q").exit_code == 0
    target, info = sheet_of(tmp_path, "--html-limit", "2")
    sheet = parse(target)
    assert sheet.names("red") == ["grey0.png", "grey1.png"]  # the grey ones lean red
    assert sheet.names("green") == ["g.jpg"]
    assert sheet.counts["red"] == 8
    assert sheet.more == {"red": "6 more red images not shown (--html-limit 2)",
                          "low": "1 more low-confidence image not shown (--html-limit 2)"}
    assert info.endswith("; 7 left out by --html-limit)")


def test_low_threshold_follows_report_low(photos, tmp_path):
    classify(photos)
    target, _ = sheet_of(tmp_path, "--low", "0.2")
    sheet = parse(target)
    assert "low" not in sheet.counts
    assert "grey.png" in sheet.names("red")


def test_a_file_gone_since_classify_gets_a_placeholder(photos, tmp_path):
    classify(photos)
    (photos / "r2.png").unlink()
    (photos / "g1.png").write_bytes(b"now garbage")
    target, info = sheet_of(tmp_path)
    figures = {f.name: f for f in parse(target).figures}
    assert figures["r2.png"].src is None
    assert figures["r2.png"].placeholder == "cannot read: no such file"
    assert figures["g1.png"].placeholder == f"cannot read: {NOT_AN_IMAGE}"
    assert figures["r1.jpg"].src
    assert info.endswith("; 2 no longer readable)")


def test_all_runs_and_the_header(photos, tmp_path):
    classify(photos)
    sha = json.loads(invoke("info", "--json").stdout)["sha256"]
    target, _ = sheet_of(tmp_path)
    text = target.read_text(encoding="utf-8")
    assert f"model <code>{sha[:12]}</code>" in text
    assert re.search(r"run 1, started \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    target, info = sheet_of(tmp_path, "--all")
    assert "all stored results (latest per image)" in target.read_text(encoding="utf-8")
    assert info.startswith("contact sheet: ") and "(7 images, 3 classes" in info


def test_cannot_write_is_exit_2_and_leaves_nothing(photos, tmp_path):
    classify(photos)
    target = tmp_path / "missing" / "sheet.html"
    result = invoke("report", "--html", str(target))
    assert result.exit_code == 2
    assert f"Error: cannot write {target}: No such file or directory" in result.stderr
    (tmp_path / "out").mkdir()
    assert invoke("report", "--html", str(tmp_path / "out" / "s.html")).exit_code == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s.html"]  # no .part left


def test_empty_run(tmp_path):
    (tmp_path / "empty").mkdir()
    invoke("classify", str(tmp_path / "empty"))
    target, info = sheet_of(tmp_path)
    assert "No images." in target.read_text(encoding="utf-8")
    assert info.startswith(f"contact sheet: {target} (0 images, 0 classes, ")


def test_ordered_map_keeps_order_and_a_bounded_window():
    """Thumbnails stream: `threads` are made at once, they come back in input order, and
    no more than `window` are pending however many items there are."""
    consumed = 0
    # The first three items wait for each other: with fewer than three running at once the
    # barrier breaks (after its timeout, a guard against a hang), failing the test.
    together = threading.Barrier(3, timeout=10)

    def items():
        nonlocal consumed
        for i in range(50):
            consumed += 1
            yield i

    def work(i: int) -> int:
        if i < 3:
            together.wait()
        time.sleep(0.001 * (2 - i % 3))  # later items often finish first
        return i * i

    out = []
    for n, value in enumerate(ordered_map(work, items(), threads=3, window=6)):
        assert consumed - n <= 6
        out.append(value)
    assert out == [i * i for i in range(50)]


# -- a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium) to render the sheet")


def chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}",
         *args, url],
        capture_output=True, timeout=120, text=True, check=False)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for (the browser's own background requests left out),
    from Chromium's net log: those are the requests whose isolation key is the file."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "file://" in e["params"].get("network_isolation_key", "")]


@needs_chromium
def test_chromium_renders_the_sheet_offline(photos, tmp_path):
    classify(photos)
    target, _ = sheet_of(tmp_path)
    shot, net_log = tmp_path / "shot.png", tmp_path / "net.json"
    run = chromium(target.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,900",
                   f"--log-net-log={net_log}")
    assert shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot is nearly blank"
    pixels = {c for _, c in colours}

    def near(target_rgb: tuple[int, int, int]) -> bool:
        return any(sum(abs(a - b) for a, b in zip(p, target_rgb, strict=True)) < 60 for p in pixels)

    # The red, green and blue thumbnails were drawn: data URIs pass the CSP.
    assert near((220, 30, 30)) and near((30, 200, 40)) and near((30, 40, 210))
    assert page_requests(net_log) == []

    # The control: the same check does see a page that loads from the network.
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://example.invalid/x.png">', encoding="utf-8")
    chromium(bad.as_uri(), tmp_path, "--dump-dom", f"--log-net-log={tmp_path / 'bad.json'}")
    assert page_requests(tmp_path / "bad.json") == ["http://example.invalid/x.png"]


@needs_chromium
def test_chromium_runs_the_script_and_sorts(tmp_path):
    folder = tmp_path / "photos"
    for i, tint in enumerate((60, 40, 20, 10, 5)):  # confidence falls with the name
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (40, 40), (128 + tint, 128, 128)).save(folder / f"t{i}.png")
    assert invoke("classify", str(folder), "-q").exit_code == 0
    target, _ = sheet_of(tmp_path, "--low", "0")
    assert [f.name for f in parse(target).figures] == [f"t{i}.png" for i in range(5)]
    run = chromium(target.as_uri() + "#sort=asc", tmp_path, "--dump-dom")
    dom = run.stdout
    assert '<html lang="en" class="js">' in dom, run.stderr[-2000:]  # the script ran to its end
    names = re.findall(r'<span class="name" title="[^"]*">([^<]*)</span>', dom)
    assert names == [f"t{i}.png" for i in reversed(range(5))]  # lowest confidence first
