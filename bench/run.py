"""`make bench`: scenetool against its own ceilings, in one table and bench/results.json.

Run it as `python -m bench` (or `make bench`) from the repository root. The cases
run in rounds, each case once per round, so that all of them sample the same stretch of
time and their ratios hold when the machine's load drifts; medians are reported. It exits
0 whatever the figures (it is a report) and 2 when it cannot run at all.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import click
from rich.console import Console

from bench import cases, photos, previous, report
from bench.cases import Case
from bench.measure import REPO_ROOT, BenchError, child_env, python_module, run_command
from scenetool.engines.common import Settings
from scenetool.metadata import ModelMeta
from scenetool.model import ModelError, SceneModel, find_model, open_model

DEFAULT_OUT = REPO_ROOT / "bench" / "results.json"
PHONE_COUNT = 40
QUICK_LIMIT = 60  # photos in --quick mode
QUICK_PHONE_COUNT = 2
HEIC_COUNT = 10  # of the phone photos, also made in HEIC (each costs seconds to encode)
REPEATS = 3

log = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Plan:
    """The options, resolved: what to measure, on what, how many times."""

    model_path: Path
    photos: Path
    repeats: int
    limit: int | None
    phone_count: int
    heic_count: int
    cache: Path
    out: Path
    quick: bool
    previous: str  # the model the shipped one replaced: a git revision or a file


@dataclass(frozen=True)
class PhotoSet:
    files: list[str]
    source: str
    note: str | None = None


def choose_photos(plan: Plan, workdir: Path, explicit: bool) -> PhotoSet:
    """The shared photos, or a generated set (with a note) when the default is absent."""
    if plan.photos.is_dir():
        files, source, note = photos.list_photos(plan.photos), str(plan.photos), None
    elif explicit:
        raise click.BadParameter(f"no such folder: {plan.photos}", param_hint="--photos")
    else:
        n = min(plan.limit or photos.GENERATED_COUNT, photos.GENERATED_COUNT)
        files = photos.generate_photos(workdir / "generated", n)
        source = f"{n} generated JPEGs"
        note = (f"{plan.photos} not found: measured on {n} generated JPEGs, "
                "so the figures are not comparable with the README's")
    if not files:
        raise click.BadParameter(f"no images in {plan.photos}", param_hint="--photos")
    return PhotoSet(files[: plan.limit] if plan.limit else files, source, note)


def startup_cases(model_path: Path, one_image: str, workdir: Path) -> list[Case]:
    serial = count()

    def classify_one() -> list[str]:
        store = workdir / f"startup-{next(serial)}.db"
        return ["classify", one_image, "--store", str(store), "--model", str(model_path), "-q"]

    return [
        cases.startup_case("startup_version", "start-up: scenetool --version",
                           lambda: ["--version"]),
        cases.startup_case("startup_info", "start-up: scenetool info",
                           lambda: ["info", "--model", str(model_path)]),
        cases.startup_case("startup_classify_one", "start-up: classify one image",
                           classify_one),
    ]


def phone_cases(plan: Plan, files: list[str], workdir: Path) -> list[Case]:
    names = ("phone_end_to_end", "phone_naive")
    titles = ("phone photos: end to end", "phone photos: naive loop")
    if plan.phone_count == 0:
        return [Case(n, t, "images/s", skipped="skipped (--phone-count 0)")
                for n, t in zip(names, titles, strict=True)]
    log.print(f"[dim]phone photos: {plan.phone_count} x 12 MP in {plan.cache} "
              "(made once, then reused)[/]")
    made = photos.phone_photos(files, plan.phone_count, plan.cache)
    for path in made:  # read once so no case pays for a cold page cache
        Path(path).read_bytes()
    folder = Path(made[0]).parent
    return [
        cases.classify_case(names[0], titles[0], folder, len(made), plan.model_path, workdir),
        cases.naive_case(names[1], titles[1], folder, len(made), plan.model_path),
        *heic_cases(plan, made, workdir),
    ]


HEIC_CASES = (
    ("phone_heic_jpeg", "phone photos in JPEG: end to end (the HEIC set's originals)"),
    ("phone_heic", "phone photos in HEIC (320 px thumbnail): end to end"),
    ("phone_heic_full", "phone photos in HEIC, no thumbnail: end to end"),
)


def heic_cases(plan: Plan, jpegs: list[str], workdir: Path) -> list[Case]:
    """The first phone photos in JPEG and in HEIC, with and without a phone's thumbnail."""
    count = min(plan.heic_count, len(jpegs))
    if count == 0:
        return [Case(n, t, "images/s", skipped="skipped (--heic-count 0)")
                for n, t in HEIC_CASES]
    log.print(f"[dim]phone photos in HEIC: {count}, with and without a thumbnail "
              "(made once, then reused)[/]")
    chosen = jpegs[:count]
    folders = [photos.link_tree(chosen, workdir / "phone-heic-jpeg")]
    for thumbnail in (True, False):
        made = photos.phone_heics(chosen, thumbnail)
        for path in made:
            Path(path).read_bytes()
        folders.append(Path(made[0]).parent)
    return [cases.classify_case(name, title, folder, count, plan.model_path, workdir)
            for (name, title), folder in zip(HEIC_CASES, folders, strict=True)]


def in_process_cases(model: SceneModel, files: list[str], settings: Settings,
                     previous: SceneModel | str) -> list[Case]:
    """Decode once (which also warms the page cache) to feed the ceilings, then the cases:
    the model alone, decoding alone, and the previous model alone (or why it is skipped)."""
    threads, batch = settings.decode_threads(), settings.batch_size
    images = cases.decoded_input(files, model.meta, threads)
    found = [cases.ceiling_case(model, images, batch),
             cases.decode_case(files, model.meta, threads)]
    title = "ceiling: previous model alone"
    if isinstance(previous, str):
        found.append(Case("ceiling_previous", title, "images/s", skipped=previous))
        return found
    if _decoding(previous.meta) != _decoding(model.meta):
        images = cases.decoded_input(files, previous.meta, threads)
    found.append(cases.ceiling_case(previous, images, batch, "ceiling_previous", title))
    return found


def _decoding(meta: ModelMeta) -> tuple:
    return meta.image_size, meta.channel_order, meta.value_range, meta.resize


def previous_model(spec: str, workdir: Path) -> SceneModel | str:
    """The model the shipped one replaced, or why it cannot be measured."""
    try:
        return open_model(previous.fetch(spec, workdir / "previous.onnx"))
    except (BenchError, ModelError) as exc:
        return f"skipped: {exc}"


def build_cases(plan: Plan, model: SceneModel, files: list[str], workdir: Path) -> list[Case]:
    settings = Settings()  # the tool's defaults: batch size and decode threads
    n = len(files)
    folder = photos.link_tree(files, workdir / "photos")
    fivefold = photos.link_tree(files, workdir / "photos-x5", copies=5)
    found = startup_cases(plan.model_path, files[0], workdir)
    found += in_process_cases(model, files, settings, previous_model(plan.previous, workdir))
    found += [
        cases.classify_case("end_to_end", "end to end: scenetool classify", folder, n,
                            plan.model_path, workdir),
        cases.naive_case("naive", "naive loop: full decode, batch of 1", folder, n,
                         plan.model_path),
    ]
    found += phone_cases(plan, files, workdir)
    found.append(cases.classify_case("memory_5x", "peak RSS: classify the folder 5 times over",
                                     fivefold, 5 * n, plan.model_path, workdir, unit="MiB"))
    found.append(ray_case(plan, fivefold, 5 * n, workdir))
    return found


def ray_case(plan: Plan, folder: Path, images: int, workdir: Path) -> Case:
    """`classify --engine ray` on the five-fold folder: a local Ray started and shut down
    by every repeat, against the local engine's runs of memory_5x (same folder, same
    rounds)."""
    title = "Ray engine, 5x: classify --engine ray (start-up included)"
    if importlib.util.find_spec("ray") is None:
        return Case("ray_5x", title, "images/s", images=images,
                    skipped="needs the ray extra: pip install '.[ray]'")
    return cases.classify_case("ray_5x", title, folder, images, plan.model_path, workdir,
                               extra=("--engine", "ray"))


def warm_up(model_path: Path) -> None:
    """Compile and cache what every process imports, untimed."""
    for args in (["--version"], ["info", "--model", str(model_path)]):
        try:
            run_command(python_module("scenetool", *args), child_env())
        except BenchError:
            pass  # the timed case reports it


def run_rounds(planned: list[Case], repeats: int) -> None:
    for round_no in range(1, repeats + 1):
        for case in planned:
            sample = case.run_once()
            shown = (report.show(sample.value, case.unit) if sample
                     else case.error or case.skipped or "-")
            log.print(f"[dim]round {round_no}/{repeats}  {case.name:<22} {shown}[/]")


def document(plan: Plan, chosen: PhotoSet, model: SceneModel, by_name: dict[str, Case],
             figs: dict[str, report.Figure], checked: list[dict], started: dict) -> dict:
    settings = Settings()
    return {
        "machine": started,
        "settings": {
            "model": str(plan.model_path), "model_sha256": model.sha256,
            "previous_model": plan.previous,
            "photos": chosen.source, "images": len(chosen.files), "note": chosen.note,
            "repeats": plan.repeats, "quick": plan.quick, "limit": plan.limit,
            "phone_photos": plan.phone_count, "heic_photos": plan.heic_count,
            "batch_size": settings.batch_size, "decode_threads": settings.decode_threads(),
        },
        "cases": {name: case.as_dict() for name, case in by_name.items()},
        "figures": {name: fig.value for name, fig in figs.items()},
        "targets": checked,
        "failed": [t["figure"] for t in checked if t["passed"] is False],
        "load_average_after": report.machine()["load_average"],
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_opt", metavar="FILE", default=None,
              help="ONNX model. Default: the shipped model (as scenetool finds it).")
@click.option("--photos", "photos_opt", metavar="DIR", default=None,
              help=f"Photos to classify. Default: {photos.DEFAULT_PHOTOS} (a generated set "
                   "when absent).")
@click.option("--quick", is_flag=True,
              help=f"Smoke run: {QUICK_LIMIT} photos, 1 repeat, {QUICK_PHONE_COUNT} phone photos.")
@click.option("--repeats", type=click.IntRange(1, 100), default=None,
              help=f"Repeats of every case (median reported). Default: {REPEATS}, 1 with --quick.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N photos only.")
@click.option("--phone-count", type=click.IntRange(0), default=None,
              help=f"Phone photos to make and classify; 0 skips them. Default: {PHONE_COUNT}.")
@click.option("--heic-count", type=click.IntRange(0), default=None,
              help=f"Of the phone photos, how many to make and classify in HEIC too; 0 skips "
                   f"them. Default: {HEIC_COUNT} (at most --phone-count).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where phone photos are kept between runs. Default: "
                   "~/.cache/scenetool-bench.")
@click.option("--previous", "previous_opt", metavar="REV|FILE", default=previous.PREVIOUS_REV,
              help="The model the shipped one replaced, timed beside it: a git revision "
                   "(its scenetool/models/scenes.onnx) or a file. Default: the model "
                   "before issue 10's retraining.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Where to write the results as JSON.")
def main(model_opt: str | None, photos_opt: str | None, quick: bool, repeats: int | None,
         limit: int | None, phone_count: int | None, heic_count: int | None,
         cache: Path | None, previous_opt: str, out: Path) -> None:
    """Measure scenetool against its ceilings and print one table with the targets."""
    try:
        model_path = find_model(model_opt).resolve()
        model = open_model(model_path)
    except ModelError as exc:
        raise click.UsageError(str(exc)) from None
    plan = Plan(model_path, Path(photos_opt or photos.DEFAULT_PHOTOS),
                repeats or (1 if quick else REPEATS), limit or (QUICK_LIMIT if quick else None),
                phone_count if phone_count is not None else
                (QUICK_PHONE_COUNT if quick else PHONE_COUNT),
                heic_count if heic_count is not None else
                (QUICK_PHONE_COUNT if quick else HEIC_COUNT),
                cache or photos.default_cache(), out, quick, previous_opt)
    started = report.machine()
    with tempfile.TemporaryDirectory(prefix="scenetool-bench-") as tmp:
        workdir = Path(tmp)
        chosen = choose_photos(plan, workdir, explicit=photos_opt is not None)
        if chosen.note:
            log.print(f"[yellow]note: {chosen.note}[/]")
        log.print(f"[dim]{len(chosen.files)} photos from {chosen.source}; model "
                  f"{plan.model_path}; {plan.repeats} repeat(s)[/]")
        case_list = build_cases(plan, model, chosen.files, workdir)
        warm_up(plan.model_path)
        run_rounds(case_list, plan.repeats)
    by_name = {case.name: case for case in case_list}
    by_name["memory_1x"] = cases.derived_memory_case(by_name["end_to_end"])
    by_name["local_5x"] = cases.derived_throughput_case(
        "local_5x", "local engine, 5x: classify (the memory_5x runs)", by_name["memory_5x"])
    figs = report.figures(by_name)
    checked = report.check_targets(figs)
    report.write_json(plan.out, document(plan, chosen, model, by_name, figs, checked, started))
    console = Console(width=None if sys.stdout.isatty() else 120)
    title = (f"scenetool bench: {len(chosen.files)} photos, {plan.repeats} repeat(s), "
             f"{started['cores']} cores ({started['cpu']})")
    console.print(report.table(figs, checked, title))
    if chosen.note:
        console.print(f"note: {chosen.note}", style="yellow", highlight=False)
    console.print(report.failed_line(figs, checked), highlight=False,
                  style="green" if not any(t["passed"] is False for t in checked) else "red")
    console.print(f"written to {plan.out}", highlight=False)


if __name__ == "__main__":
    main()
