"""The model card: a Markdown page next to the exported model, with its figures beside it.

Everything on it is measured at export time or read from the run folder (config.json,
state.json, history.csv, metrics.json of the compared runs); nothing is typed in by hand.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from scenetool.fsutil import write_text
from train.export import OPSET, PARITY_IMAGES, PARITY_TOL, ExportResult
from train.fitting.fit import FitConfig, Stage, stages, train_seconds
from train.fitting.pipeline import AugmentConfig
from train.reports.evaluate import draw
from train.reports.speed import BATCH, ROUNDS, THREADS, Speed, throughputs


def augmentations(cfg: FitConfig) -> list[str]:
    aug = AugmentConfig(mixup=cfg.mixup, cutmix=cfg.cutmix)
    items = [
        (f"random resized crop (area {aug.min_area:.0%} to 100%, aspect ratio "
        f"{1 / aug.max_aspect:.2f} to {aug.max_aspect:.2f})"),
        f"rotation up to ±{aug.max_rotation_deg:g}°",
    ]
    if aug.hflip:
        items.append("horizontal flip")
    items.append(f"brightness ±{aug.brightness:.0%}, contrast ±{aug.contrast:.0%}, "
                 f"saturation ±{aug.saturation:.0%}")
    if aug.cutmix:
        items.append(f"cutmix (alpha {aug.cutmix:g})")
    elif aug.mixup:
        items.append(f"mixup (alpha {aug.mixup:g})")
    return items


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(r) + " |" for r in (header, rule, *rows)]


def data_section(res: ExportResult) -> list[str]:
    rd = res.run
    train, val = rd.folder.counts(rd.split.train), rd.folder.counts(rd.split.val)
    rows = [[c, str(train[c]), str(val[c]), str(train[c] + val[c])] for c in rd.classes]
    rows.append(["**all**", str(len(rd.split.train)), str(len(rd.split.val)),
                 str(len(rd.split.train) + len(rd.split.val))])
    lines = [
        "## Data", "",
        (f"Class folders of `{rd.folder.root.name}` (Kaggle Intel Image Classification layout). "
        f"The validation split is a stratified {rd.split.fraction:.0%} of every class, "
        f"seed {rd.split.seed}; the run keeps its copy in `split.txt`."),
    ]
    if rd.arrays.bad:
        lines.append(f"{len(rd.arrays.bad)} unreadable file(s) were skipped.")
    if rd.cfg.max_train:
        lines.append(f"Only {rd.cfg.max_train} training images (a seeded sample) were used: "
                     "a smoke run.")
    return lines + [""] + _table(["class", "train", "validation", "total"], rows) + [""]


def _schedule(cfg: FitConfig) -> str:
    warmup = (f"linear warm-up over {cfg.warmup_epochs:g} epoch(s), then "
              if cfg.warmup_epochs else "")
    if cfg.cycle:
        return (f"{warmup}cosine decay to zero, restarted every {cfg.cycle} epoch(s) "
                "(warm restarts)")
    return f"{warmup}cosine decay to zero"


def _teachers(cfg: FitConfig) -> str:
    """Whose probabilities a distilled stage's targets take, each teacher with its size."""
    if len(cfg.teachers) == 1:
        (path, size), = cfg.teachers
        return (f"the probabilities of the teacher `{path}` on the same augmented image"
                + (f" (resized to {size} px for the teacher)" if size else ""))
    named = [f"`{path}` ({f'resized to {size} px' if size else 'at the student size'})"
             for path, size in cfg.teachers]
    return (f"the mean probabilities of the teachers {', '.join(named[:-1])} and {named[-1]} "
            "on the same augmented image")


def _stage_lines(stage: Stage) -> list[str]:
    cfg, state = stage.cfg, stage.state
    phases = ", ".join(f"{size} px × {n} epochs" for size, n in cfg.phases)
    lines = [f"- Starts from the weights of `{cfg.init_from}` (not its optimizer state)"
             ] if cfg.init_from else []
    lines += [
        (f"- {'Progressive resizing' if len(cfg.phases) > 1 else 'Image size'}: {phases} "
         f"(planned {cfg.epochs}, ran {state.get('epochs_done', '?')}; best validation "
         f"accuracy at epoch {state.get('best_epoch', '?')})"),
        (f"- Batch {cfg.batch}; AdamW, peak learning rate {cfg.lr:g}, weight decay "
         f"{cfg.weight_decay:g}; {_schedule(cfg)}"),
        f"- Loss: categorical cross-entropy with label smoothing {cfg.label_smoothing:g}",
        f"- Augmentation (training only, in the input pipeline): {'; '.join(augmentations(cfg))}",
        f"- Early stopping patience: {cfg.patience or 'off'}; seed {cfg.seed}",
    ]
    if cfg.teachers and cfg.distill:
        lines.append(f"- Distillation: every target is {cfg.distill:g} of {_teachers(cfg)} "
                     f"and {1 - cfg.distill:g} of the label")
    if cfg.ema:
        lines.append(f"- Weight average: an exponential moving average of every weight, decay "
                     f"{cfg.ema:g}, kept beside the run (`--checkpoint ema` exports it)")
    if cfg.swa_from:
        lines.append(f"- Epoch average (SWA): the mean of the weights at the end of every epoch "
                     f"from epoch {cfg.swa_from} on, BatchNorm statistics included "
                     f"(`--checkpoint swa` exports it)")
    if "seconds" in state:
        lines.append(f"- Training time: {_duration(state['seconds'])} "
                     f"(sum of epoch wall times){_quiet_note([stage.path], os.cpu_count())}")
    return lines


def recipe_section(res: ExportResult, chain: list[Stage]) -> list[str]:
    lines = ["## Training recipe", "",
             (f"- Architecture: `{res.run.cfg.arch}`, {res.params:,} parameters; input float32 "
              "RGB 0..255, scaling inside the model")]
    if len(chain) == 1:
        return lines + _stage_lines(chain[0]) + [""]
    lines.append(f"- {len(chain)} stages, each a `python -m train fit` run, in the order they "
                 "ran; a stage says what it builds on: the weights it starts from, or its "
                 "teacher")
    for number, stage in enumerate(chain, 1):
        lines += ["", f"### Stage {number}: run `{stage.path.name}`", ""] + _stage_lines(stage)
    lines += ["", (f"All stages: {_duration(train_seconds(chain))} (sum of epoch wall times)"
                   f"{_quiet_note([stage.path for stage in chain], os.cpu_count())}.")]
    return lines + [""]


def quiet_seconds(history: dict[str, list[float]]) -> float | None:
    """What the run would take alone on the machine: the fastest epoch of each image size,
    times that size's epochs. Epoch times grow with whatever else shares the cores, so the
    plain sum says more about the machine's other work than about the recipe."""
    sizes, seconds = history.get("image_size", []), history.get("seconds", [])
    if not sizes or len(sizes) != len(seconds):
        return None
    fastest: dict[float, float] = {}
    for size, s in zip(sizes, seconds, strict=True):
        fastest[size] = min(s, fastest.get(size, s))
    return sum(fastest[size] for size in sizes)


def _quiet_note(runs: list[Path], cores: int | None) -> str:
    from train.reports.plots import read_history

    parts = [quiet_seconds(read_history(run)) for run in runs]
    if None in parts:
        return ""
    quiet = sum(parts)
    cpu = f", so about {_duration(quiet * cores)} of CPU time" if cores else ""
    return (f"; alone on this machine ({cores} cores, fastest epoch of each image size times "
            f"its epochs) about {_duration(quiet)}{cpu}")


RUN_NOTES = "NOTES.md"


def run_notes(runs: list[Path]) -> list[str]:
    """What each run's folder says about how the run went (its NOTES.md), for what the
    config cannot say: a run stopped and resumed with other settings, say."""
    notes = [(run, run / RUN_NOTES) for run in runs if (run / RUN_NOTES).is_file()]
    if not notes:
        return []
    lines = ["## Notes on this run" if len(runs) == 1 else "## Notes on these runs", ""]
    for run, path in notes:
        if len(runs) > 1:
            lines += [f"### Run `{run.name}`", ""]
        lines += [path.read_text(encoding="utf-8").strip(), ""]
    return lines


def _size_note(res: ExportResult) -> list[str]:
    """Why the model runs at another size than it last trained at, when it does."""
    trained = res.run.cfg.phases[-1][0]
    if res.image_size == trained:
        return []
    return [(f"The net last trained at {trained} px, on random crops that show objects larger "
             f"than whole images do; it is exported at {res.image_size} px because it scores "
             "best on whole images a little above its training size (the FixRes effect). The "
             "size was chosen on this validation split: `python -m train evaluate RUN "
             f"--checkpoint {res.checkpoint} --image-size N` gives the score at any N."), ""]


def results_section(res: ExportResult, pngs: dict[str, Path], card_dir: Path) -> list[str]:
    rep, classes = res.report, res.run.classes
    rows = [[c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
             str(m["support"])] for c, m in rep["per_class"].items()]
    cm_rows = [[f"**{c}**", *(str(v) for v in rep["confusion"][i])] for i, c in enumerate(classes)]

    def rel(key: str) -> str:
        return Path(os.path.relpath(pngs[key], card_dir)).as_posix()

    return [
        "## Validation results", "",
        (f"Measured on the exported ONNX file at {res.image_size} px, on all {rep['n']} "
        f"validation images, by the scorer of `scenetool evaluate` (the tool's own decoder "
        f"and onnxruntime; `scenetool evaluate DATA --split split.txt --model "
        f"{res.path.name}` gives the same figures): **accuracy {rep['accuracy']:.2%}**, "
        f"macro F1 {rep['macro_f1']:.3f}."), "",
        *_size_note(res),
        *_table(["class", "precision", "recall", "F1", "support"], rows), "",
        "### Confusion matrix", "",
        "Rows: true class; columns: predicted class.", "",
        *_table(["true \\ predicted", *classes], cm_rows), "",
        f"![confusion matrix]({rel('confusion')})", "",
        "### Training curves", "",
        "Training dashed, validation solid (validation at each epoch's image size).", "",
        f"![training curves]({rel('curves')})", "",
        "### Spot check", "",
        ("Twelve seeded-random validation images with the model's probabilities: true class "
        "green, a wrong prediction red."), "",
        f"![spot check]({rel('spotcheck')})", "",
    ]


def model_section(res: ExportResult, speed: Speed) -> list[str]:
    import onnxruntime

    s = res.image_size
    rows = [
        ["file", f"`{res.path.name}`, {_size(res.file_size)}"],
        ["input", f"`image` float32 [batch, {s}, {s}, 3], RGB 0..255, NHWC"],
        ["output", f"`probs` float32 [batch, {len(res.run.classes)}], softmax"
                   + ("; `scene_score` float32 [batch] (see *Not a scene*)"
                      if res.unknown is not None else "")],
        ["labels", ", ".join(res.run.classes)],
        ["ONNX opset", str(OPSET)],
        ["parameters", f"{res.params:,}"],
        ["MACs per image", f"{res.macs / 1e6:.1f} M (Conv, MatMul; FLOPs ≈ 2 × MACs)"],
        ["speed", (f"{speed.ms_per_image:.2f} ms per image (onnxruntime "
                   f"{onnxruntime.__version__}, batch {BATCH}, {THREADS} intra-op threads, "
                   f"median of {ROUNDS}; {platform.machine()}, {os.cpu_count()} cores, of which "
                   f"the timing got {speed.cores_used:.1f}: fewer than {THREADS} means other "
                   "work shared them)")],
        ["parity", (f"max abs difference to Keras {res.parity_max_diff:.1e} on "
                    f"{min(PARITY_IMAGES, res.report['n'])} validation images "
                    f"(limit {PARITY_TOL:g})")],
        ["checkpoint", f"run `{res.run.name}`, `{res.checkpoint}.keras`"],
    ]
    return ["## Model file", "", *_table(["", ""], rows, "ll"), ""]


def comparison_section(res: ExportResult, runs_dir: Path, names: list[str]) -> list[str]:
    rows = [[f"**this model** (`{res.run.cfg.arch}`, ONNX at {res.image_size} px)",
             f"{res.params:,}", f"{res.report['accuracy']:.2%}"]]
    notes = []
    for name in names:
        metrics_path = runs_dir / name / "metrics.json"
        if not metrics_path.exists():
            notes.append(f"- `{name}`: skipped, no {metrics_path.as_posix()}")
            continue
        m = json.loads(metrics_path.read_text())
        rows.append([f"`{name}` ({m.get('arch', '?')}, best epoch {m.get('best_epoch', '?')})",
                     f"{m.get('params', 0):,}", f"{m.get('best_val_accuracy', 0):.2%}"])
    return ["## Comparison", "",
            ("Validation accuracy on the same split; other runs' numbers are their best epoch "
            "(Keras, at that epoch's image size) from their metrics.json."), "",
            *_table(["model", "parameters", "validation accuracy"], rows), "", *notes,
            *([""] if notes else [])]


def unknown_section(res: ExportResult, card_dir: Path) -> list[str]:
    """The calibration of the probabilities and, when the model has one, its "not a
    scene" score (see `scene_sections`)."""
    import numpy as np

    from train.unknown import scene_sections

    true = np.asarray([res.run.classes.index(c) for c in _true_names(res)])
    return scene_sections(res.probs, true, res.unknown, card_dir, res.path.name)


def _true_names(res: ExportResult) -> list[str]:
    return [res.run.classes[res.run.folder.labels[i]] for i in res.run.split.val]


def candidates_section(registry: Path, card_dir: Path, reference: str) -> list[str]:
    from train.reports import candidates as cand

    rows = cand.load(registry)
    if not rows:
        return []
    png = cand.plot(rows, card_dir / "candidates.png", "Candidates: accuracy and speed")
    return ["## Candidates", "",
            (f"Every model tried, from `{registry.as_posix()}` (`python -m train candidates`): "
             "accuracy and macro F1 on the validation split through the runtime, throughput "
             "measured side by side in one run."), "",
            *cand.table(rows, reference), "", f"![candidates]({png.name})", ""]


def write_card(res: ExportResult, card: Path, runs_dir: Path, compare: list[str],
               registry: Path | None = None) -> Path:
    """MODEL.md at `card` and confusion.png, curves.png, spotcheck.png, calibration.png
    (and roc.png, candidates.png when there is what they show) beside it."""
    from train.reports.plots import compare_curves

    card_dir = card.parent
    card_dir.mkdir(parents=True, exist_ok=True)
    title = f"{res.path.name} ({res.image_size}px)"
    pngs = draw(res.run, res.run.val_labels(), res.probs, res.report, card_dir, title,
                res.image_size)
    chain = stages(res.run.path, res.run.cfg, res.run.state)
    runs = [stage.path for stage in chain]
    pngs["curves"] = compare_curves(runs, card_dir / "curves.png",
                                    f"Training curves: {'run' if len(runs) == 1 else 'runs'} "
                                    f"{', '.join(r.name for r in runs)}")
    speed = throughputs([res.path])[0]
    created = json.loads(res.props["created"])
    head = [
        f"# Model card: {res.path.name}", "",
        (f"Sorts a photo into one of {len(res.run.classes)} scene classes: "
        f"{', '.join(res.run.classes)}. Exported from run `{res.run.name}` on {created} by "
        f"`python -m train export`."), "",
    ]
    lines = (head + data_section(res) + recipe_section(res, chain) + run_notes(runs)
             + results_section(res, pngs, card_dir)
             + unknown_section(res, card_dir) + model_section(res, speed)
             + comparison_section(res, runs_dir, compare))
    if registry is not None:
        lines += candidates_section(registry, card_dir, res.run.cfg.arch)
    write_text(card, "\n".join(lines).rstrip() + "\n")
    return card
