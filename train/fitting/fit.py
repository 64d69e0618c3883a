"""Training: AdamW with warm-up and cosine decay, progressive resizing, resumable runs.

A run lives in `runs/<name>/`: config.json, split.txt (a copy of the split it used),
history.csv, last.keras (model and optimizer, written after every epoch), best.keras
(best validation accuracy), state.json (where to resume) and metrics.json.

Each epoch is its own `model.fit(..., initial_epoch=e, epochs=e + 1)` call, because the
epoch's image size and random seed pick its dataset. The learning rate follows the
optimizer's step counter, which is saved with the optimizer, so `--resume` continues the
same schedule as an uninterrupted run would.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scenetool.fsutil import atomic_path, atomic_write, write_text
from train import data as data_mod


class FitError(Exception):
    """A run that cannot start or resume as asked."""


@dataclass
class FitConfig:
    arch: str = "scenenet"
    data: str = "data/intel/seg_train"
    name: str = ""
    runs_dir: str = "runs"
    split: str = ""  # default: runs/split-<data folder name>.txt
    phases: list[tuple[int, int]] = field(default_factory=lambda: [(96, 12)])  # (size, epochs)
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    seed: int = data_mod.DEFAULT_SEED
    val_fraction: float = data_mod.DEFAULT_VAL_FRACTION
    patience: int = 6  # early stopping on validation accuracy; 0 turns it off
    jit: bool = True
    cache_dir: str = ""
    max_train: int = 0  # use only N training images, a seeded sample (smoke runs); 0 = all
    ema: float = 0.0  # decay of the weight average kept as ema.keras (train.fitting.ema); 0 = off
    swa_from: int = 0  # average epoch-end weights from this epoch on (train.fitting.swa); 0 = off
    cycle: int = 0  # restart the cosine every this many epochs; 0 = one cosine over the run
    init_from: str = ""  # a .keras file whose weights start the run (a second stage); "" = random
    # (a .keras model, the size it sees the training images at; 0 = the student's): the mean
    # of their probabilities is part of the targets (train.fitting.pipeline.distilled)
    teachers: list[tuple[str, int]] = field(default_factory=list)
    distill: float = 0.0  # the teachers' share of the targets

    @property
    def epochs(self) -> int:
        return sum(e for _, e in self.phases)

    def size_at(self, epoch: int) -> int:
        done = 0
        for size, n in self.phases:
            done += n
            if epoch < done:
                return size
        return self.phases[-1][0]

    def to_json(self) -> dict:
        out = asdict(self)
        out["phases"] = [list(p) for p in self.phases]
        return out

    @classmethod
    def read(cls, run: Path) -> FitConfig:
        """The config a run was started with (its config.json)."""
        return cls.from_json(json.loads((run / "config.json").read_text()))

    @classmethod
    def from_json(cls, obj: dict) -> FitConfig:
        obj = dict(obj)
        obj["phases"] = [tuple(p) for p in obj["phases"]]
        obj["teachers"] = [tuple(t) for t in obj.get("teachers", _one_teacher(obj))]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in obj.items() if k in known})


def _one_teacher(obj: dict) -> list[tuple[str, int]]:
    """The teachers of a config.json written before there could be several: `teacher` (a
    path, "" for none) and `teacher_size`."""
    return [(obj["teacher"], obj.get("teacher_size", 0))] if obj.get("teacher") else []


def parse_teacher(text: str, size: int) -> tuple[str, int]:
    """`PATH` (seen at `size`) or `PATH@SIZE`: a teacher and the size it sees the images at."""
    path, at, given = text.rpartition("@")
    if not at:
        return text, size
    if not given.isdigit():
        raise ValueError(f"{text}: the size after @ is a whole number of px (0: the "
                         "student's size), e.g. runs/scenenet-swa/swa.keras@128")
    return path, int(given)


@dataclass
class Stage:
    """One fit of the recipe: a run folder with its config and state."""

    path: Path
    cfg: FitConfig
    state: dict


MAX_STAGES = 8


def _source(stage: Stage, ref: str) -> Stage | None:
    """The run that holds the model file `ref` (a checkpoint or a teacher) named by `stage`:
    where it was named, else beside `stage` (the same folder of runs, seen from another
    working folder); None when its folder is gone."""
    source = Path(ref).parent
    if not (source / "config.json").is_file():
        source = stage.path.parent / source.name
    try:
        return Stage(source, FitConfig.read(source),
                     json.loads((source / "state.json").read_text()))
    except (OSError, ValueError):
        return None


def stages(run: Path, cfg: FitConfig, state: dict) -> list[Stage]:
    """Every run the model took to make, each once, a run after the runs it builds on: the
    run whose weights it started from (`fit --init-from`), the runs its teachers came from
    (`fit --teacher`), and theirs. A run whose folder is gone is left out."""
    chain: list[Stage] = []
    seen: set[Path] = set()

    def visit(stage: Stage) -> None:
        seen.add(stage.path.resolve())
        teachers = [path for path, _ in stage.cfg.teachers] if stage.cfg.distill else []
        for ref in [*teachers, stage.cfg.init_from]:
            source = _source(stage, ref) if ref and len(seen) < MAX_STAGES else None
            if source is not None and source.path.resolve() not in seen:
                visit(source)
        chain.append(stage)

    visit(Stage(run, cfg, state))
    return chain


def train_seconds(chain: list[Stage]) -> float:
    """The wall time of every stage's epochs, summed."""
    return sum(float(stage.state.get("seconds", 0.0)) for stage in chain)


def parse_phases(text: str, epochs: int | None) -> list[tuple[int, int]]:
    """`96` (with --epochs) or `96:10,128:4,150:2`: image size and epochs per phase."""
    phases = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            size, n = part.split(":", 1)
            phases.append((int(size), int(n)))
        else:
            phases.append((int(part), -1))
    if len(phases) == 1 and phases[0][1] == -1:
        return [(phases[0][0], epochs or 12)]
    if any(n <= 0 for _, n in phases):
        raise ValueError("with several image sizes give each one's epochs: 96:10,150:2")
    if epochs is not None and epochs != sum(n for _, n in phases):
        raise ValueError("--epochs disagrees with the epochs given per image size")
    return phases


HISTORY_FIELDS = ["epoch", "image_size", "loss", "accuracy", "val_loss", "val_accuracy",
                  "lr", "seconds", "ema_val_accuracy", "swa_val_accuracy"]


def _lr_schedule(cfg: FitConfig, steps_per_epoch: int):
    from train.fitting.schedule import WarmupCosine

    return WarmupCosine(cfg.lr, int(cfg.warmup_epochs * steps_per_epoch),
                        cfg.epochs * steps_per_epoch, cfg.cycle * steps_per_epoch)


def _build(cfg: FitConfig, num_classes: int, steps_per_epoch: int):
    import keras

    from train.fitting.zoo import fixed_size, make_model

    sizes = {s for s, _ in cfg.phases}
    if fixed_size(cfg.arch) and len(sizes) > 1:
        raise FitError(f"{cfg.arch} flattens its features, so it trains at one image size only")
    model = make_model(cfg.arch, num_classes, cfg.phases[0][0] if fixed_size(cfg.arch) else None)
    if cfg.init_from:
        _load_start_weights(model, Path(cfg.init_from))
    optimizer = keras.optimizers.AdamW(
        learning_rate=_lr_schedule(cfg, steps_per_epoch), weight_decay=cfg.weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"], jit_compile=cfg.jit)
    return model


def load_saved(path: Path, missing: str):
    """The Keras model saved at `path`, without its optimizer (the learning-rate schedule
    registered for loading), or a FitError saying `missing` when there is no such file."""
    import keras

    import train.fitting.schedule  # noqa: F401 - registers the schedule for loading

    if not path.is_file():
        raise FitError(missing)
    return keras.models.load_model(path, compile=False)


def _load_start_weights(model, path: Path) -> None:
    """Start from another run's weights (its optimizer state is not carried over)."""
    source = load_saved(path, f"--init-from {path}: no such checkpoint")
    try:
        model.set_weights(source.get_weights())
    except ValueError as exc:
        raise FitError(f"--init-from {path}: its layers do not match this --arch ({exc})") from exc


def _load_teachers(cfg: FitConfig, num_classes: int) -> list[tuple[object, int]]:
    """The teachers of a distilled run (`--teacher`) with their sizes; none for a run that
    gives them no share of the targets."""
    return [(_load_teacher(path, num_classes), size)
            for path, size in (cfg.teachers if cfg.distill else [])]


def _load_teacher(path: str, num_classes: int):
    teacher = load_saved(Path(path), f"--teacher {path}: no such model")
    if teacher.output_shape[-1] != num_classes:
        raise FitError(f"--teacher {path}: it has {teacher.output_shape[-1]} classes, "
                       f"the data {num_classes}")
    teacher.trainable = False
    return teacher


def _write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def _save(model, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:  # Keras insists on the extension
        model.save(tmp)


def _start_history(path: Path, epochs_done: int) -> None:
    """history.csv with a header and the rows of the epochs done (as state.json counts them).

    A run stopped after writing an epoch's row but before its state.json would otherwise
    repeat that epoch's row when resumed.
    """
    rows = []
    if path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _accuracy(model, dataset) -> float:
    """Top-1 accuracy of `model` on a dataset of (images, one-hot labels) batches."""
    right = total = 0
    for x, y in dataset.as_numpy_iterator():
        pred = np.asarray(model(x, training=False)).argmax(axis=1)
        right += int((pred == y.argmax(axis=1)).sum())
        total += len(y)
    return right / max(total, 1)


def default_split_path(cfg: FitConfig) -> Path:
    return Path(cfg.runs_dir) / f"split-{Path(cfg.data).resolve().name}.txt"


def prepare(cfg: FitConfig):
    """Scan, split and decode the data for `cfg`: (folder, split, arrays), bad files removed."""
    folder = data_mod.scan(cfg.data)
    split_path = Path(cfg.split) if cfg.split else default_split_path(cfg)
    split = data_mod.load_or_make_split(folder, split_path, cfg.val_fraction, cfg.seed)
    arrays = data_mod.load_arrays(folder, cfg.cache_dir or None)
    bad = set(arrays.bad)
    split.train = [i for i in split.train if i not in bad]
    split.val = [i for i in split.val if i not in bad]
    if cfg.max_train and cfg.max_train < len(split.train):
        # A seeded sample, not the first N: the files are sorted by class, so the first N
        # would hold only the first class or two.
        picked = np.random.default_rng(cfg.seed).choice(len(split.train), cfg.max_train,
                                                        replace=False)
        split.train = [split.train[i] for i in sorted(picked)]
    return folder, split, arrays


def _step_progress(steps: int):
    """A Keras callback that rewrites one stderr line with the step count, on a terminal
    only; Keras' own output ('Epoch 2/2' and its bar) is off, the epoch lines are ours."""
    import keras

    class StepProgress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            text = f"  step {batch + 1}/{steps}" + (f", loss {loss:.3f}" if loss else "")
            print(f"\r{text}\x1b[K", end="", file=sys.stderr, flush=True)

        def on_epoch_end(self, epoch, logs=None):
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)

    return [StepProgress()] if sys.stderr.isatty() else []


def _open_run(cfg: FitConfig, resume: bool) -> tuple[FitConfig, Path, dict]:
    """(config, folder, state) of a run: a resumed run's own config and state, or a new
    run's folder with its config.json written and a state at epoch 0."""
    run = Path(cfg.runs_dir) / cfg.name
    state_path = run / "state.json"
    if resume:
        if not state_path.exists():
            raise FitError(f"nothing to resume in {run}: no state.json there")
        saved = FitConfig.read(run)
        saved.runs_dir = cfg.runs_dir
        return saved, run, json.loads(state_path.read_text())
    if state_path.exists():
        raise FitError(f"run {run} exists; pass --resume to continue it or pick another --name")
    run.mkdir(parents=True, exist_ok=True)
    _write_json(run / "config.json", cfg.to_json())
    return cfg, run, {"epochs_done": 0, "best_val_accuracy": -1.0, "best_epoch": -1,
                      "seconds": 0.0}


def _averages(cfg: FitConfig, run: Path, model, state: dict, resume: bool):
    """The run's weight averages: (EMA callback or None, epoch average or None)."""
    average = swa = None
    if cfg.ema:
        from train.fitting.ema import EMA_CHECKPOINT, WeightAverage

        average = WeightAverage(cfg.ema)
        average.start(model, run / EMA_CHECKPOINT if resume else None)
    if cfg.swa_from:
        from train.fitting.swa import EpochAverage

        swa = EpochAverage.resume(run, state["epochs_done"])
    return average, swa


def _score_averages(row: dict, state: dict, model, run: Path, epoch: int, cfg: FitConfig,
                    average, swa, val_ds) -> None:
    """Save the averages after an epoch and put their validation accuracy in `row`."""
    if average is not None:
        from train.fitting.ema import EMA_CHECKPOINT

        averaged = average.averaged(model)
        row["ema_val_accuracy"] = state["ema_val_accuracy"] = _accuracy(averaged, val_ds)
        _save(averaged, run / EMA_CHECKPOINT)
    if swa is not None and epoch + 1 >= cfg.swa_from:
        from train.fitting.swa import SWA_CHECKPOINT

        swa.add(model, epoch + 1)
        swa.save(run)
        averaged = swa.averaged(model)
        row["swa_val_accuracy"] = state["swa_val_accuracy"] = _accuracy(averaged, val_ds)
        state["swa_epochs"] = swa.epochs
        _save(averaged, run / SWA_CHECKPOINT)


def _epoch_line(row: dict, epochs: int) -> str:
    """The one stderr line that reports an epoch."""
    return (f"epoch {row['epoch']}/{epochs} at {row['image_size']}px: loss {row['loss']:.3f}, "
            f"accuracy {row['accuracy']:.1%}, validation loss {row['val_loss']:.3f}, accuracy "
            f"{row['val_accuracy']:.1%}"
            + (f", weight average {row['ema_val_accuracy']:.1%}" if "ema_val_accuracy" in row
               else "")
            + (f", epoch average {row['swa_val_accuracy']:.1%}" if "swa_val_accuracy" in row
               else "")
            + f" ({row['seconds']:.0f} s)")


def _record_epoch(run: Path, model, row: dict, state: dict) -> None:
    """history.csv, last.keras, best.keras, then state.json: the epoch is done once the
    state says so, and a run stopped before that repeats it."""
    with (run / "history.csv").open("a", newline="") as f:
        csv.DictWriter(f, HISTORY_FIELDS).writerow(row)
    _save(model, run / "last.keras")
    state["epochs_done"] = row["epoch"]
    state["seconds"] += row["seconds"]
    if row["val_accuracy"] > state["best_val_accuracy"]:
        state["best_val_accuracy"] = row["val_accuracy"]
        state["best_epoch"] = row["epoch"]
        _save(model, run / "best.keras")
    _write_json(run / "state.json", state)


def _metrics(cfg: FitConfig, model, state: dict, split, classes) -> dict:
    return {
        "arch": cfg.arch,
        "params": int(model.count_params()),
        "epochs": state["epochs_done"],
        "best_epoch": state["best_epoch"],
        "best_val_accuracy": state["best_val_accuracy"],
        "train_seconds": round(state["seconds"], 1),
        **({"ema": cfg.ema, "ema_val_accuracy": state.get("ema_val_accuracy")} if cfg.ema else {}),
        **({"swa_from": cfg.swa_from, "swa_epochs": state.get("swa_epochs"),
            "swa_val_accuracy": state.get("swa_val_accuracy")} if cfg.swa_from else {}),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "classes": list(classes),
    }


@dataclass
class _Epochs:
    """What every epoch's datasets are made from: the decoded images, their labels, the
    split, the augmentation and the teachers of a distilled run."""

    cfg: FitConfig
    arrays: object
    labels: np.ndarray
    split: data_mod.Split
    num_classes: int
    teachers: list[tuple[object, int]]

    def datasets(self, epoch: int, size: int):
        """(training, validation) datasets of `epoch` (0-based) at `size` px."""
        from train.fitting.pipeline import AugmentConfig, distilled, eval_dataset, train_dataset

        cfg = self.cfg
        aug = AugmentConfig(mixup=cfg.mixup, cutmix=cfg.cutmix)
        train_ds = train_dataset(self.arrays.images, self.labels, self.split.train, size=size,
                                 batch=cfg.batch, epoch=epoch, seed=cfg.seed,
                                 num_classes=self.num_classes, cfg=aug)
        if self.teachers:
            train_ds = distilled(train_ds, self.teachers, cfg.distill)
        val_ds = eval_dataset(self.arrays.images, self.labels, self.split.val, size=size,
                              num_classes=self.num_classes)
        return train_ds, val_ds


def _fit_epoch(model, epochs: _Epochs, epoch: int, callbacks: list) -> tuple[dict, object]:
    """Train one epoch (0-based); (its history.csv row without the averages, validation set)."""
    import keras

    size = epochs.cfg.size_at(epoch)
    train_ds, val_ds = epochs.datasets(epoch, size)
    started = time.perf_counter()
    h = model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
                  verbose=0, callbacks=callbacks).history
    seconds = time.perf_counter() - started
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    row = {"epoch": epoch + 1, "image_size": size, "lr": lr, "seconds": round(seconds, 1)}
    row.update({k: float(h[k][-1]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")})
    return row, val_ds


def _model(cfg: FitConfig, run: Path, resume: bool, num_classes: int, steps_per_epoch: int):
    """A resumed run's model and optimizer from last.keras, else a new model."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    if resume:
        import train.fitting.schedule  # noqa: F401 - registers the schedule for loading
        return keras.models.load_model(run / "last.keras")
    return _build(cfg, num_classes, steps_per_epoch)


def fit(cfg: FitConfig, resume: bool = False) -> dict:
    """Train (or resume) the run `cfg.name`; returns the metrics written to metrics.json."""
    cfg, run, state = _open_run(cfg, resume)
    folder, split, arrays = prepare(cfg)
    if split.path and split.path.resolve() != (run / "split.txt").resolve():
        shutil.copyfile(split.path, run / "split.txt")
    num_classes = len(folder.classes)
    steps_per_epoch = len(split.train) // cfg.batch
    if steps_per_epoch == 0:
        raise FitError(f"{len(split.train)} training images make no batch of {cfg.batch}")

    model = _model(cfg, run, resume, num_classes, steps_per_epoch)
    epochs = _Epochs(cfg, arrays, np.asarray(folder.labels), split, num_classes,
                     _load_teachers(cfg, num_classes))
    average, swa = _averages(cfg, run, model, state, resume)
    callbacks = _step_progress(steps_per_epoch) + ([average] if average is not None else [])
    _start_history(run / "history.csv", state["epochs_done"])

    print(f"run {run}: {cfg.arch}, {len(split.train)} train / {len(split.val)} val images, "
          f"{steps_per_epoch} steps an epoch, phases {cfg.phases}, "
          f"from epoch {state['epochs_done'] + 1}",
          file=sys.stderr)
    for epoch in range(state["epochs_done"], cfg.epochs):
        row, val_ds = _fit_epoch(model, epochs, epoch, callbacks)
        _score_averages(row, state, model, run, epoch, cfg, average, swa, val_ds)
        print(_epoch_line(row, cfg.epochs), file=sys.stderr)
        _record_epoch(run, model, row, state)
        if swa is not None:
            swa.forget_older(run)  # the state now counts the newest mean
        if cfg.patience and state["epochs_done"] - state["best_epoch"] >= cfg.patience:
            print(f"early stop: no better validation accuracy in {cfg.patience} epochs",
                  file=sys.stderr)
            break

    metrics = _metrics(cfg, model, state, split, folder.classes)
    _write_json(run / "metrics.json", metrics)
    return metrics
