"""The training side end to end on a tiny generated data set: summary, fit and resume,
evaluate, compare, export (with its model card) and the errors for bad data folders.

TensorFlow is imported once; one `tiny` run, fitted in a module-scoped fixture, serves every
test after it. The whole file takes about a minute on two cores.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from train import data as data_mod
from train import export as export_mod  # TensorFlow and tf2onnx load only when called
from train.cli import cli
from train.fitting import fit as fit_mod

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("matplotlib")

pytestmark = [  # noise from inside Keras 3.15 (model.save, model.fit on a tf.data.Dataset)
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed"),
]

CLASSES = ("buildings", "forest", "sea")
COLOURS = {"buildings": (190, 70, 60), "forest": (40, 150, 60), "sea": (40, 90, 210)}
PER_CLASS = 12
BATCH = 8
SIZE = 32


def _make_data(root: Path) -> Path:
    """3 classes x 12 noisy solid-colour 40x40 JPEGs (stripes differ by class), one 150x100
    image (resized when decoded) and one corrupt .jpg (skipped with a warning)."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.asarray(COLOURS[name], float) + rng.normal(0, 20, (40, 40, 3))
            pixels[:: k + 2] *= 0.6
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:02d}.jpg")
    wide = np.full((100, 150, 3), COLOURS["forest"], np.uint8)
    Image.fromarray(wide).save(root / "forest" / "wide.jpg")
    (root / "sea" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def _not_scenes(folder: Path) -> Path:
    """Six photos of nothing: flat grey shades, 40x40."""
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 40, 3), 30 * i, np.uint8)).save(folder / f"flat{i}.png")
    return folder


def _invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def _history_epochs(run: Path) -> list[int]:
    with (run / "history.csv").open(newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("train")
    return {"tmp": tmp, "data": _make_data(tmp / "seg_train"), "runs": tmp / "runs",
            "env": {"SCENETOOL_TRAIN_CACHE": str(tmp / "cache")}}


@pytest.fixture(scope="module")
def fitted(work) -> dict:
    """A 2-epoch `tiny` run with a weight average, killed (KeyboardInterrupt) right after
    epoch 1's checkpoint and state were written, then continued with --resume."""
    args = ["fit", "--arch", "tiny", "--data", work["data"], "--runs", work["runs"],
            "--name", "tiny", "--image-size", SIZE, "--epochs", 2, "--batch-size", BATCH,
            "--no-jit", "--patience", 0, "--ema", 0.9, "--swa-from", 1]
    write_json = fit_mod._write_json

    def stop_after_first_epoch(path: Path, obj) -> None:
        write_json(path, obj)
        if path.name == "state.json" and obj["epochs_done"] == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit_mod, "_write_json", stop_after_first_epoch)
        interrupted = _invoke(args, work["env"])
    run = work["runs"] / "tiny"
    after_interrupt = {"exit_code": interrupted.exit_code, "output": interrupted.output,
                       "state": json.loads((run / "state.json").read_text()),
                       "epochs": _history_epochs(run),
                       "metrics": (run / "metrics.json").exists(),
                       "epoch_1_weights": _weights(run / "last.keras"),
                       "swa_files": sorted(p.name for p in run.glob("swa*"))}
    resumed = _invoke(["fit", "--name", "tiny", "--runs", work["runs"], "--resume"], work["env"])
    return {"run": run, "interrupted": after_interrupt, "resumed": resumed}


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    import train.fitting.schedule  # noqa: F401

    return keras.models.load_model(path, compile=False).get_weights()


def test_summary_prints_table_and_draws_chart(work):
    png = work["tmp"] / "summary.png"
    result = _invoke(["summary", work["data"], "--runs", work["runs"], "--png", png], work["env"])
    assert result.exit_code == 0, result.output
    for name in (*CLASSES, "train", "val", "all"):
        assert name in result.output
    assert png.stat().st_size > 5000
    assert (work["runs"] / "split-seg_train.txt").exists()


def test_load_arrays_resizes_and_skips_corrupt(work, caplog):
    folder = data_mod.scan(work["data"])
    with caplog.at_level(logging.WARNING, logger="train.data"):
        arrays = data_mod.load_arrays(folder, work["tmp"] / "cache-direct")
    assert [folder.files[i] for i in arrays.bad] == ["sea/broken.jpg"]
    assert "sea/broken.jpg" in caplog.text
    assert arrays.images.shape == (len(folder.files), 150, 150, 3)
    wide = folder.files.index("forest/wide.jpg")
    assert np.allclose(arrays.images[wide].reshape(-1, 3).mean(0), COLOURS["forest"], atol=3)


def test_fit_resumes_where_it_stopped(fitted):
    run, stopped = fitted["run"], fitted["interrupted"]
    assert stopped["exit_code"] == 130
    assert stopped["output"].strip().splitlines()[-1] == (
        f"interrupted: epoch 1 is checkpointed in {run}/last.keras; continue with: "
        f"python -m train fit --name tiny --runs {run.parent} --resume")
    assert stopped["state"]["epochs_done"] == 1 and stopped["epochs"] == [1]
    assert not stopped["metrics"]
    assert fitted["resumed"].exit_code == 0, fitted["resumed"].output
    assert _history_epochs(run) == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["classes"] == list(CLASSES)
    assert metrics["n_train"] + metrics["n_val"] == 3 * PER_CLASS + 1  # corrupt file left out

    import keras

    import train.fitting.schedule  # noqa: F401

    model = keras.models.load_model(run / "last.keras")
    steps = metrics["n_train"] // BATCH
    assert int(model.optimizer.iterations.numpy()) == 2 * steps


def test_fit_keeps_the_weight_average(fitted):
    import keras

    run = fitted["run"]
    with (run / "history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [0.0 <= float(r["ema_val_accuracy"]) <= 1.0 for r in rows] == [True, True]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ema"] == 0.9
    assert metrics["ema_val_accuracy"] == float(rows[-1]["ema_val_accuracy"])
    averaged = keras.models.load_model(run / "ema.keras", compile=False)
    last = keras.models.load_model(run / "last.keras", compile=False)
    assert [w.shape for w in averaged.get_weights()] == [w.shape for w in last.get_weights()]
    assert any(not np.allclose(a, b) for a, b in zip(averaged.get_weights(),
                                                      last.get_weights(), strict=True))


def test_the_epoch_average_is_the_mean_of_each_epochs_weights_across_a_resume(fitted):
    run, stopped = fitted["run"], fitted["interrupted"]
    # Killed after epoch 1's state.json: its mean is kept, and only its own.
    assert stopped["swa_files"] == ["swa-epoch-1.npz", "swa.keras"]
    assert stopped["state"]["swa_epochs"] == 1
    state = json.loads((run / "state.json").read_text())
    assert state["swa_epochs"] == 2
    assert sorted(p.name for p in run.glob("swa*")) == ["swa-epoch-2.npz", "swa.keras"]
    averaged, last = _weights(run / "swa.keras"), _weights(run / "last.keras")
    for avg, first, second in zip(averaged, stopped["epoch_1_weights"], last, strict=True):
        assert np.allclose(avg, (first + second) / 2, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(averaged, last, strict=True))
    with (run / "history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [0.0 <= float(r["swa_val_accuracy"]) <= 1.0 for r in rows] == [True, True]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["swa_from"], metrics["swa_epochs"]) == (1, 2)


def test_warm_restarts_start_every_cycle_at_the_peak_and_end_it_near_zero():
    import keras

    from train.fitting.schedule import WarmupCosine

    schedule = WarmupCosine(1e-3, warmup=10, total=310, cycle=100)
    lr = [float(schedule(step)) for step in range(310)]
    assert lr[9] == pytest.approx(1e-3)  # the warm-up's end
    assert [lr[10], lr[110], lr[210]] == [pytest.approx(1e-3)] * 3
    assert [lr[60], lr[160], lr[260]] == [pytest.approx(5e-4)] * 3
    assert max(lr[109], lr[209], lr[309]) < 1e-6
    one = WarmupCosine(1e-3, warmup=10, total=310)  # no cycle: one cosine over the run
    assert float(one(160)) == pytest.approx(5e-4) and float(one(309)) < 1e-6
    saved = keras.optimizers.schedules.serialize(schedule)
    again = keras.optimizers.schedules.deserialize(saved)
    assert float(again(210)) == pytest.approx(1e-3)  # the cycle survives a save


def _second_stage(work, fitted, name: str, *extra) -> Path:
    """A 1-epoch second stage started from the `tiny` run's last weights, at learning rate 0."""
    args = ["fit", "--arch", "tiny", "--data", work["data"], "--runs", work["runs"],
            "--name", name, "--image-size", SIZE, "--epochs", 1,
            "--batch-size", BATCH, "--no-jit", "--lr", 0, "--cycle", 1, "--warmup", 0,
            "--patience", 0, "--init-from", fitted["run"] / "last.keras", *extra]
    result = _invoke(args, work["env"])
    assert result.exit_code == 0, result.output
    return work["runs"] / name


@pytest.fixture(scope="module")
def second_stage(work, fitted) -> Path:
    return _second_stage(work, fitted, "tiny-stage2")


def test_a_second_stage_starts_from_the_first_stages_weights(fitted, second_stage):
    # With a learning rate of 0 no step moves a trainable weight, so the second stage ends
    # with exactly the weights it started from.
    import keras

    import train.fitting.schedule  # noqa: F401

    def trainable(path: Path) -> list[np.ndarray]:
        model = keras.models.load_model(path, compile=False)
        return [np.asarray(w) for w in model.trainable_weights]

    for start, end in zip(trainable(fitted["run"] / "last.keras"),
                          trainable(second_stage / "last.keras"), strict=True):
        np.testing.assert_array_equal(start, end)
    config = json.loads((second_stage / "config.json").read_text())
    assert (config["init_from"], config["cycle"]) == (str(fitted["run"] / "last.keras"), 1)
    assert (config["teachers"], config["distill"]) == ([], 0.0)  # not distilled


def test_a_second_stages_card_shows_every_stage_and_their_summed_time(work, fitted,
                                                                    second_stage):
    from scenetool.metadata import ModelMeta
    from scenetool.model import SceneModel

    out = work["tmp"] / "stage2" / "scenes.onnx"
    result = _invoke(["export", "tiny-stage2", "--runs", work["runs"], "--out", out,
                      "--card", out.parent / "MODEL.md", "--unknown", "none"], work["env"])
    assert result.exit_code == 0, result.output
    text = (out.parent / "MODEL.md").read_text()
    for needle in ("- 2 stages, each a `python -m train fit` run, in the order they ran",
                   "### Stage 1: run `tiny`\n",
                   "### Stage 2: run `tiny-stage2`\n\n- Starts from the weights of "
                   f"`{fitted['run'] / 'last.keras'}` (not its optimizer state)\n",
                   "restarted every 1 epoch(s) (warm restarts)",
                   "\nAll stages: "):
        assert needle in text, needle
    assert text.index("### Stage 1") < text.index("### Stage 2")
    meta: ModelMeta = SceneModel(out).meta
    first = json.loads((fitted["run"] / "state.json").read_text())["seconds"]
    second = json.loads((second_stage / "state.json").read_text())["seconds"]
    assert meta.extra["train_seconds"] == pytest.approx(first + second, abs=0.1)
    assert second > 0


def test_stages_follow_init_from_back_to_the_first_run(tmp_path, monkeypatch):
    from train.fitting.fit import FitConfig, stages

    runs = tmp_path / "runs"
    for name, init_from in (("one", ""), ("two", "runs/one/last.keras"),
                            ("three", "runs/two/last.keras")):
        (runs / name).mkdir(parents=True)
        cfg = FitConfig(name=name, init_from=init_from)
        (runs / name / "config.json").write_text(json.dumps(cfg.to_json()))
        (runs / name / "state.json").write_text(json.dumps({"seconds": len(name)}))
    last = FitConfig(name="three", init_from="runs/two/last.keras")
    monkeypatch.chdir(tmp_path)  # where the runs were fitted: init_from as given
    assert [s.path.name for s in stages(runs / "three", last, {})] == ["one", "two", "three"]
    monkeypatch.chdir(runs / "one")  # elsewhere: the sources are found beside the run
    chain = stages(runs / "three", last, {})
    assert [(s.path, s.state) for s in chain[:2]] == [(runs / "one", {"seconds": 3}),
                                                      (runs / "two", {"seconds": 3})]
    (runs / "one" / "config.json").unlink()  # a first stage that is gone is left out
    assert [s.path.name for s in stages(runs / "three", last, {})] == ["two", "three"]


def test_stages_take_in_the_teachers_runs_once_each(tmp_path):
    from train.fitting.fit import FitConfig, stages

    runs = tmp_path / "runs"
    configs = {"one": FitConfig(), "two": FitConfig(init_from=f"{runs}/one/last.keras"),
               "kd": FitConfig(teachers=[(f"{runs}/two/swa.keras", 0)], distill=0.7),
               "undistilled": FitConfig(teachers=[(f"{runs}/two/swa.keras", 0)], distill=0.0)}
    for name, cfg in configs.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps(cfg.to_json()))
        (runs / name / "state.json").write_text(json.dumps({"seconds": 1}))
    last = FitConfig(init_from=f"{runs}/kd/last.keras", teachers=[(f"{runs}/two/swa.keras", 0)],
                     distill=0.5)
    chain = stages(runs / "kd-swa", last, {})
    assert [s.path.name for s in chain] == ["one", "two", "kd", "kd-swa"]
    assert [s.path.name for s in stages(runs / "undistilled", configs["undistilled"], {})] == [
        "undistilled"]  # a teacher with no share of the targets took no part


def test_stages_take_in_every_teachers_run_once(tmp_path):
    from train.fitting.fit import FitConfig, stages

    runs = tmp_path / "runs"
    for name in ("a", "b", "c"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps(FitConfig().to_json()))
        (runs / name / "state.json").write_text(json.dumps({"seconds": 1}))
    last = FitConfig(init_from=f"{runs}/c/last.keras", distill=0.5,
                     teachers=[(f"{runs}/a/swa.keras", 128), (f"{runs}/b/ema.keras", 0),
                               (f"{runs}/a/last.keras", 96), (f"{runs}/c/swa.keras", 0)])
    assert [s.path.name for s in stages(runs / "kd", last, {})] == ["a", "b", "c", "kd"]


def test_distilled_targets_are_the_teachers_share_of_its_probabilities(fitted):
    import keras
    import tensorflow as tf

    from train.fitting.pipeline import distilled

    teacher = keras.models.load_model(fitted["run"] / "last.keras", compile=False)
    x = np.random.default_rng(3).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    y = np.eye(len(CLASSES), dtype=np.float32)[[0, 1, 2, 0]]
    ds = tf.data.Dataset.from_tensors((x, y))
    (x_out, y_out), = list(distilled(ds, [(teacher, 0)], 0.25).as_numpy_iterator())
    soft = np.asarray(teacher(x, training=False))
    np.testing.assert_array_equal(x_out, x)
    np.testing.assert_allclose(y_out, 0.75 * y + 0.25 * soft, atol=1e-6)
    assert not np.allclose(y_out, y)
    (_, y_big), = list(distilled(ds, [(teacher, 2 * SIZE)], 1.0).as_numpy_iterator())
    big = tf.image.resize(x, (2 * SIZE, 2 * SIZE), method="bilinear")
    np.testing.assert_allclose(y_big, np.asarray(teacher(big, training=False)), atol=1e-6)
    assert not np.allclose(y_big, soft, atol=1e-3)


def _batch() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(3).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    return x, np.eye(len(CLASSES), dtype=np.float32)[[0, 1, 2, 0]]


def test_distilled_targets_of_two_teachers_are_the_mean_at_their_own_sizes(fitted):
    import keras
    import tensorflow as tf

    from train.fitting.pipeline import distilled
    from train.fitting.zoo import make_model

    first = keras.models.load_model(fitted["run"] / "last.keras", compile=False)
    keras.utils.set_random_seed(5)
    second = make_model("tiny", len(CLASSES), None)
    x, y = _batch()
    ds = tf.data.Dataset.from_tensors((x, y))
    (_, y_out), = list(distilled(ds, [(first, 2 * SIZE), (second, 0)], 0.6)
                       .as_numpy_iterator())
    big = tf.image.resize(x, (2 * SIZE, 2 * SIZE), method="bilinear")
    soft = [np.asarray(first(big, training=False)), np.asarray(second(x, training=False))]
    np.testing.assert_allclose(y_out, 0.4 * y + 0.6 * (soft[0] + soft[1]) / 2, atol=1e-6)
    assert not np.allclose(soft[0], soft[1], atol=1e-3)


@pytest.mark.parametrize("size", [0, 2 * SIZE])
def test_one_teacher_gives_the_targets_it_gave_before_ensembles(fitted, size):
    import keras
    import tensorflow as tf

    from train.fitting.pipeline import distilled

    teacher = keras.models.load_model(fitted["run"] / "last.keras", compile=False)

    def before(x, y):  # distilled() as it was with one teacher
        seen = tf.image.resize(x, (size, size), method="bilinear") if size else x
        soft = tf.cast(teacher(seen, training=False), tf.float32)
        return x, (1.0 - 0.7) * y + 0.7 * soft

    ds = tf.data.Dataset.from_tensors(_batch())
    (_, expected), = list(ds.map(before).as_numpy_iterator())
    (_, y_out), = list(distilled(ds, [(teacher, size)], 0.7).as_numpy_iterator())
    np.testing.assert_array_equal(y_out, expected)


def test_a_teacher_is_a_path_with_an_optional_size():
    from train.fitting.fit import parse_teacher

    assert parse_teacher("runs/a/swa.keras", 0) == ("runs/a/swa.keras", 0)
    assert parse_teacher("runs/a/swa.keras", 128) == ("runs/a/swa.keras", 128)
    assert parse_teacher("runs/a/swa.keras@96", 128) == ("runs/a/swa.keras", 96)
    assert parse_teacher("runs/a/swa.keras@0", 128) == ("runs/a/swa.keras", 0)
    assert parse_teacher("runs/a@b/swa.keras@96", 0) == ("runs/a@b/swa.keras", 96)
    for bad in ("runs/a/swa.keras@", "runs/a/swa.keras@big", "runs/a/swa.keras@-5",
                "runs/a@b/swa.keras"):  # a path with an @ in it takes an @SIZE
        with pytest.raises(ValueError, match=f"^{re.escape(bad)}: the size after @ is a whole"):
            parse_teacher(bad, 0)


def test_a_bad_teacher_size_is_a_usage_error(work):
    result = _invoke(["fit", "--arch", "tiny", "--data", work["data"], "--runs", work["runs"],
                      "--name", "bad-size", "--teacher", "runs/a/swa.keras@big"], work["env"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: Invalid value for --teacher: runs/a/swa.keras@big: the size after @ is a "
        "whole number of px (0: the student's size), e.g. runs/scenenet-swa/swa.keras@128")
    assert not (work["runs"] / "bad-size").exists()


@pytest.fixture(scope="module")
def distilled_stage(work, fitted) -> Path:
    """The second stage again, with the run itself as teacher (seeing 2x size images)."""
    return _second_stage(work, fitted, "tiny-distilled", "--teacher",
                         fitted["run"] / "last.keras", "--distill", 1.0,
                         "--teacher-size", 2 * SIZE)


def test_a_distilled_run_learns_from_the_teachers_targets(fitted, second_stage,
                                                          distilled_stage):
    # Learning rate 0, same weights, same batches: only the targets differ, so the loss does.
    config = json.loads((distilled_stage / "config.json").read_text())
    assert (config["teachers"], config["distill"]) == (
        [[str(fitted["run"] / "last.keras"), 2 * SIZE]], 1.0)
    assert fit_mod.FitConfig.from_json(config).teachers == [
        (str(fitted["run"] / "last.keras"), 2 * SIZE)]

    def loss(run: Path) -> float:
        with (run / "history.csv").open(newline="") as f:
            return float(next(csv.DictReader(f))["loss"])

    assert loss(distilled_stage) != pytest.approx(loss(second_stage), rel=1e-3)


def test_the_card_names_a_distilled_runs_teacher(fitted, distilled_stage):
    from train.fitting.fit import FitConfig, Stage
    from train.reports.card import _stage_lines

    config = FitConfig.from_json(json.loads((distilled_stage / "config.json").read_text()))
    assert (f"- Distillation: every target is 1 of the probabilities of the teacher "
            f"`{fitted['run'] / 'last.keras'}` on the same augmented image (resized to "
            f"{2 * SIZE} px for the teacher) and 0 of the label"
            ) in _stage_lines(Stage(distilled_stage, config, {}))


def test_the_card_names_every_teacher_of_an_ensemble_and_its_size():
    from train.fitting.fit import FitConfig, Stage
    from train.reports.card import _stage_lines

    config = FitConfig(distill=0.6, teachers=[("runs/a/swa.keras", 128), ("runs/b/ema.keras", 0),
                                              ("runs/c/swa.keras", 150)])
    assert ("- Distillation: every target is 0.6 of the mean probabilities of the teachers "
            "`runs/a/swa.keras` (resized to 128 px), `runs/b/ema.keras` (at the student size) "
            "and `runs/c/swa.keras` (resized to 150 px) on the same augmented image and 0.4 of "
            "the label") in _stage_lines(Stage(Path("runs/kd"), config, {}))
    config.distill = 0.0  # teachers with no share of the targets: no distillation
    assert not any(line.startswith("- Distillation") for line in
                   _stage_lines(Stage(Path("runs/kd"), config, {})))


def test_a_run_distilled_before_ensembles_resumes_and_keeps_its_card(work, fitted,
                                                                     second_stage):
    from train.fitting.fit import FitConfig, Stage
    from train.reports.card import _stage_lines

    run = work["runs"] / "tiny-old-kd"
    shutil.copytree(second_stage, run)
    config = json.loads((run / "config.json").read_text())
    del config["teachers"]
    config.update(name=run.name, phases=[[SIZE, 2]], distill=0.7,
                  teacher=str(fitted["run"] / "last.keras"), teacher_size=2 * SIZE)
    (run / "config.json").write_text(json.dumps(config))
    result = _invoke(["fit", "--name", run.name, "--runs", work["runs"], "--resume"],
                     work["env"])
    assert result.exit_code == 0, result.output
    assert _history_epochs(run) == [1, 2]
    cfg = FitConfig.read(run)
    assert cfg.teachers == [(str(fitted["run"] / "last.keras"), 2 * SIZE)]
    assert (f"- Distillation: every target is 0.7 of the probabilities of the teacher "
            f"`{fitted['run'] / 'last.keras'}` on the same augmented image (resized to "
            f"{2 * SIZE} px for the teacher) and 0.3 of the label"
            ) in _stage_lines(Stage(run, cfg, {}))
    config.update(teacher_size=0)  # a teacher that saw the student's size
    assert (f"- Distillation: every target is 0.7 of the probabilities of the teacher "
            f"`{fitted['run'] / 'last.keras'}` on the same augmented image and 0.3 of the label"
            ) in _stage_lines(Stage(run, FitConfig.from_json(config), {}))
    config.update(teacher="")  # an undistilled run of then: no teachers
    assert FitConfig.from_json(config).teachers == []


def test_teachers_with_no_share_of_the_targets_are_not_loaded(tmp_path):
    config = fit_mod.FitConfig(teachers=[(str(tmp_path / "nope.keras"), 0)], distill=0.0)
    assert fit_mod._load_teachers(config, len(CLASSES)) == []


def test_an_unusable_teacher_is_a_clean_error(work):
    from train.fitting.zoo import make_model

    two_classes = work["tmp"] / "two-classes.keras"
    make_model("tiny", 2, None).save(two_classes)
    for teacher, message in ((work["tmp"] / "nope.keras", "no such model"),
                             (two_classes, "it has 2 classes, the data 3")):
        result = _invoke(["fit", "--arch", "tiny", "--data", work["data"], "--runs", work["runs"],
                          "--name", "bad-teacher", "--image-size", SIZE, "--epochs", 1,
                          "--batch-size", BATCH, "--no-jit", "--teacher", teacher], work["env"])
        assert result.exit_code == 2
        assert result.output.strip().splitlines()[-1] == f"Error: --teacher {teacher}: {message}"


@pytest.mark.parametrize("arch, source, message", [
    ("tiny", "missing.keras", "--init-from {source}: no such checkpoint"),
    ("scenenet", "tiny/last.keras", "--init-from {source}: its layers do not match this --arch"),
])
def test_a_second_stage_from_an_unusable_checkpoint_is_a_clean_error(work, fitted, arch,
                                                                      source, message):
    source = work["runs"] / source
    result = _invoke(["fit", "--arch", arch, "--data", work["data"], "--runs", work["runs"],
                      "--name", f"bad-{arch}", "--image-size", SIZE, "--epochs", 1,
                      "--batch-size", BATCH, "--no-jit", "--init-from", source], work["env"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: " + message.format(source=source))


def test_a_run_killed_between_its_epoch_average_and_its_state_resumes_the_older_mean(tmp_path):
    import keras

    from train.fitting.swa import EpochAverage

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    shapes = [w.shape for w in model.get_weights()]
    average = EpochAverage()
    for epoch, value in ((1, 1.0), (2, 3.0)):
        model.set_weights([np.full(s, value, np.float32) for s in shapes])
        average.add(model, epoch)
        average.save(tmp_path)  # killed before state.json says epoch 2: it still says 1
    assert [w[0].item() for w in average.mean] == [2.0, 2.0]

    resumed = EpochAverage.resume(tmp_path, epochs_done=1)
    assert (resumed.epochs, resumed.last) == (1, 1)
    assert [w.ravel()[0] for w in resumed.mean] == [1.0, 1.0]
    model.set_weights([np.full(s, 7.0, np.float32) for s in shapes])
    resumed.add(model, 2)  # epoch 2 again, trained anew
    assert [w.ravel()[0] for w in resumed.mean] == [4.0, 4.0]
    resumed.save(tmp_path)
    resumed.forget_older(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swa-epoch-2.npz"]
    assert EpochAverage.resume(tmp_path, epochs_done=0).mean is None


def test_weight_average_update(tmp_path):
    import keras

    from train.fitting.ema import WeightAverage, decay_at

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    before = [np.full(w.shape, 1.0, np.float32) for w in model.get_weights()]
    model.set_weights(before)
    model.save(tmp_path / "ema.keras")
    average = WeightAverage(0.99)
    average.start(model, tmp_path / "ema.keras")  # a resumed run starts from the saved average
    model.set_weights([np.full(w.shape, 3.0, np.float32) for w in before])
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(5)  # the update after step 4: decay min(0.99, 5/14)
    average.set_model(model)
    average.on_train_batch_end(0)
    d = decay_at(0.99, 4)
    assert d == pytest.approx(5 / 14)
    for avg in average.shadow:
        assert np.allclose(avg, d * 1.0 + (1 - d) * 3.0)
    assert np.allclose(average.averaged(model).get_weights()[0], d + (1 - d) * 3.0)
    assert decay_at(0.99, 10_000) == 0.99


def test_resume_drops_history_rows_of_an_unfinished_epoch(tmp_path):
    """A run killed between writing epoch 2's row and its state.json redoes epoch 2."""
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fit_mod.HISTORY_FIELDS)
        writer.writerows([[1, 32, 1, 0.5, 1, 0.5, 1e-3, 1], [2, 32, 1, 0.5, 1, 0.5, 1e-3, 1]])
    fit_mod._start_history(path, epochs_done=1)
    assert _history_epochs(tmp_path) == [1]


def test_report_counts_precision_recall_f1():
    from train.reports.evaluate import report

    true = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 1]]
    result = report(true, probs, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    b = result["per_class"]["b"]
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_fixed_size_arch_refuses_another_size():
    from train.fitting.fit import FitConfig, FitError
    from train.reports.evaluate import check_size

    check_size(FitConfig(arch="scenenet", phases=[(96, 1)]), 150)
    with pytest.raises(FitError, match="only takes 150px"):
        check_size(FitConfig(arch="seed-cnn", phases=[(150, 1)]), 96)


def test_the_wide_scenenet_is_wider_yet_within_the_8_mb_file_budget():
    from train.fitting.zoo import make_model

    base, wide = make_model("scenenet", 6, None), make_model("scenenet-wide", 6, None)
    assert base.count_params() < wide.count_params() < 8_000_000 / 4  # float32 weights
    first_convs = [[layer.filters for layer in m.layers if hasattr(layer, "filters")][0]
                   for m in (base, wide)]
    assert first_convs == [24, 32]
    assert wide(np.zeros((1, 96, 96, 3), np.float32)).shape == (1, 6)  # any input size


def test_fit_help_names_every_arch_of_the_zoo():
    from train.fitting.zoo import ARCHS

    result = CliRunner().invoke(cli, ["fit", "--help"])
    listed = re.search(r"Model from the zoo: ([^.]*)\.", " ".join(result.output.split()))
    assert listed and listed.group(1).split(", ") == list(ARCHS)


def test_resume_without_state_is_a_clean_error(work):
    result = _invoke(["fit", "--name", "nothing", "--runs", work["runs"], "--resume"],
                     work["env"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: nothing to resume in {work['runs'] / 'nothing'}: no state.json there"]


def test_evaluate_writes_report_and_pngs(work, fitted):
    run = fitted["run"]
    result = _invoke(["evaluate", "tiny", "--runs", work["runs"]], work["env"])
    assert result.exit_code == 0, result.output
    assert "validation accuracy" in result.output and "forest" in result.output
    report = json.loads((run / "eval.json").read_text())
    assert report["image_size"] == SIZE and report["checkpoint"] == "best"
    assert report["n"] == sum(m["support"] for m in report["per_class"].values())
    assert np.asarray(report["confusion"]).sum() == report["n"]
    for png in ("confusion.png", "spotcheck.png"):
        assert (run / png).stat().st_size > 5000

    other = _invoke(["evaluate", "tiny", "--runs", work["runs"], "--image-size", 48,
                     "--checkpoint", "last"], work["env"])
    assert other.exit_code == 0, other.output
    assert json.loads((run / "eval.json").read_text())["image_size"] == 48


def test_compare_draws_several_runs(work, fitted):
    other = work["runs"] / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with (other / "history.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fit_mod.HISTORY_FIELDS)
        writer.writerows([[1, 32, 1.0, 0.5, 1.1, 0.4, 1e-3, 1.0],
                          [2, 32, 0.8, 0.6, 0.9, 0.5, 5e-4, 1.0]])
    (other / "metrics.json").write_text(json.dumps(
        {"arch": "seed-cnn", "params": 1234, "best_epoch": 2, "best_val_accuracy": 0.5}))
    out = work["tmp"] / "compare.png"
    result = _invoke(["compare", "tiny", "other", "--runs", work["runs"], "--out", out],
                     work["env"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10000

    missing = _invoke(["compare", "nope", "--runs", work["runs"]], work["env"])
    assert missing.exit_code == 2 and "no run named nope" in missing.output


@pytest.fixture(scope="module")
def exported(work, fitted) -> dict:
    """`export tiny` with no --out, from another folder: the model lands in the run's folder."""
    out = fitted["run"] / "export" / "scenes.onnx"
    card = out.parent / "MODEL.md"
    elsewhere = work["tmp"] / "elsewhere"
    elsewhere.mkdir()
    (fitted["run"] / "NOTES.md").write_text("Stopped at epoch 1 and resumed.\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)
        result = _invoke(["export", "tiny", "--runs", work["runs"], "--card", card,
                          "--compare-runs", "other,missing",
                          "--negatives", _not_scenes(work["tmp"] / "negatives")], work["env"])
    assert result.exit_code == 0, result.output
    assert not any(elsewhere.iterdir()), "export wrote outside the run's folder"
    return {"out": out, "card": card}


def test_export_writes_checked_model_and_card(exported):
    import onnx

    from scenetool.metadata import ModelMeta
    from scenetool.model import SceneModel

    out, card = exported["out"], exported["card"]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "MODEL.md", "calibration.png", "confusion.png", "curves.png", "scenes.onnx",
        "spotcheck.png"]
    assert re.search(r"\| speed \| \d+\.\d\d ms per image \(.*, \d+ cores, of which the timing "
                     r"got \d+\.\d: fewer than 2 means other work shared them\) \|",
                     card.read_text())

    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}.get("", 0) == 17
    (inp,), outputs = proto.graph.input, proto.graph.output
    assert (inp.name, [o.name for o in outputs]) == ("image", ["probs", "scene_score"])
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch", SIZE, SIZE, 3]
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMeta.from_props(props)
    assert meta.labels == CLASSES and meta.image_size == (SIZE, SIZE)
    assert (meta.channel_order, meta.value_range, meta.layout) == ("RGB", (0.0, 255.0), "NHWC")
    assert meta.extra["arch"] == "tiny" and meta.extra["opset"] == 17
    assert 0.0 <= meta.extra["val_accuracy"] <= 1.0 and meta.extra["params"] > 0
    assert meta.extra["training_data"]["classes"] == list(CLASSES)
    assert meta.extra["created"].endswith("+00:00")
    assert meta.unknown.output == "scene_score"
    assert meta.unknown.details["method"] == "probe"
    assert meta.unknown.details["trained_on"].endswith(
        "against 12 images of 6 photos that are not scenes, each as given and shrunk to 150 px")
    assert meta.unknown.details["scenes_kept"] >= 0.95

    model = SceneModel(out)
    assert model.labels == CLASSES
    x = np.random.default_rng(1).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    probs = model.predict(x)
    assert probs.shape == (5, len(CLASSES))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    text = card.read_text()
    for needle in ("](confusion.png)", "](curves.png)", "](spotcheck.png)", "| forest |",
                   "ms per image", "label smoothing 0.1", "`other`", "`missing`: skipped",
                   "](calibration.png)", "## Not a scene", "`scene_score`",
                   "exponential moving average of every weight, decay 0.9,",
                   "fastest epoch of each image size times its epochs) about",
                   "## Notes on this run\n\nStopped at epoch 1 and resumed.\n\n## Validation"):
        assert needle in text, needle


def test_the_quiet_training_time_counts_each_epoch_at_its_sizes_fastest():
    from train.reports.card import quiet_seconds

    history = {"image_size": [64, 64, 96, 96, 96], "seconds": [90, 250, 300, 140, 900]}
    assert quiet_seconds(history) == 90 * 2 + 140 * 3
    assert quiet_seconds({}) is None


def test_card_accuracy_is_what_scenetool_evaluate_measures(work, fitted, exported):
    """The card's figures come from the runtime's decoder and onnxruntime: `scenetool
    evaluate` on the run's split, from a fresh process, gives the very same numbers."""
    import re
    import subprocess
    import sys

    out, card = exported["out"], exported["card"]
    done = subprocess.run(
        [sys.executable, "-m", "scenetool", "evaluate", str(work["data"]), "--split",
         str(fitted["run"] / "split.txt"), "--model", str(out), "--json", "-"],
        capture_output=True, text=True, check=False)
    # the split lists the corrupt file training skipped: evaluate names it and exits 1
    assert done.returncode == 1, done.stderr
    assert "broken.jpg: not an image" in done.stderr
    scores = json.loads(done.stdout)
    card_text = card.read_text()
    accuracy = re.search(r"\*\*accuracy (\d+\.\d+)%\*\*, macro F1 (\d\.\d+)", card_text)
    assert accuracy, card_text
    assert f"{100 * scores['accuracy']:.2f}" == accuracy.group(1)
    assert f"{scores['macro_f1']:.3f}" == accuracy.group(2)
    from scenetool.model import SceneModel

    meta = SceneModel(out).meta
    assert meta.extra["val_accuracy"] == round(scores["accuracy"], 6)
    assert scores["unknown"]["threshold"] == meta.unknown.threshold


def test_export_the_weight_average(work, fitted):
    import keras

    from scenetool.model import SceneModel

    out = work["tmp"] / "ema" / "scenes.onnx"
    result = _invoke(["export", "tiny", "--runs", work["runs"], "--checkpoint", "ema",
                      "--out", out, "--unknown", "none"], work["env"])
    assert result.exit_code == 0, result.output
    model = SceneModel(out)
    assert model.meta.unknown is None and model.score_name is None
    x = np.random.default_rng(2).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    averaged = keras.models.load_model(fitted["run"] / "ema.keras", compile=False)
    last = keras.models.load_model(fitted["run"] / "last.keras", compile=False)
    assert np.allclose(model.predict(x), np.asarray(averaged(x, training=False)), atol=1e-4)
    assert not np.allclose(model.predict(x), np.asarray(last(x, training=False)), atol=1e-4)


def test_ship_replaces_the_shipped_model_and_says_so(work, fitted, exported, tiny_model,
                                                   monkeypatch):
    """`ship` is the one step that replaces scenetool/models/scenes.onnx and exported/."""
    from scenetool.model import SceneModel

    repo = work["tmp"] / "repo"
    (repo / "scenetool" / "models").mkdir(parents=True)
    shipped = repo / "scenetool" / "models" / "scenes.onnx"
    shipped.write_bytes(tiny_model.read_bytes())
    old_sha = SceneModel(shipped).sha256[:12]
    monkeypatch.chdir(repo)
    result = _invoke(["ship", "tiny", "--runs", work["runs"]], work["env"])
    assert result.exit_code == 0, result.output
    new_sha = SceneModel(exported["out"]).sha256[:12]
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("replaced scenetool/models/scenes.onnx (tiny-colour, sha256 "
                               f"{old_sha}"), lines
    assert lines[1].startswith(f"    with {exported['out']} (tiny, validation accuracy ")
    assert new_sha in lines[1]
    assert lines[2] == ("replaced in exported/: MODEL.md, confusion.png, curves.png, "
                        "spotcheck.png, calibration.png, val_split.txt")
    assert shipped.read_bytes() == exported["out"].read_bytes()
    assert (repo / "exported" / "MODEL.md").read_text() == exported["card"].read_text()
    again = _invoke(["ship", "tiny", "--runs", work["runs"]], work["env"])
    assert again.output.strip().splitlines() == [
        f"scenetool/models/scenes.onnx is already {exported['out']} (sha256 {new_sha}); "
        "nothing replaced"]


def test_ship_without_export_says_what_to_run(work, fitted, tmp_path):
    run = work["runs"] / "unexported"
    run.mkdir()
    (run / "config.json").write_text("{}")
    result = _invoke(["ship", "unexported", "--runs", work["runs"]], work["env"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: run unexported has no export at {run / 'export' / 'scenes.onnx'}: "
        "run `python -m train export unexported` first")


def test_export_parity_failure_leaves_no_file(work, fitted, monkeypatch):
    monkeypatch.setattr(export_mod, "PARITY_TOL", -1.0)
    out = work["tmp"] / "failed" / "scenes.onnx"
    result = _invoke(["export", "tiny", "--runs", work["runs"], "--out", out], work["env"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ONNX and Keras disagree")
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary file left


def _no_classes(root: Path) -> Path:
    root.mkdir()
    (root / "readme.txt").write_text("no class folders here")
    return root


def _empty_class(root: Path) -> Path:
    (root / "forest").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(root / "forest" / "a.jpg")
    (root / "sea").mkdir()
    return root


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "data folder not found"),
    (_no_classes, "has no class folders"),
    (_empty_class, "class folder(s) with no images"),
])
@pytest.mark.parametrize("command", ["summary", "fit"])
def test_bad_data_folder_is_a_one_line_error(tmp_path, make, message, command):
    folder = make(tmp_path / "data")
    args = ([command, folder] if command == "summary"
            else [command, "--arch", "tiny", "--data", folder, "--name", "bad"])
    result = _invoke([*args, "--runs", tmp_path / "runs"],
                     {"SCENETOOL_TRAIN_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and message in line
    assert "Traceback" not in result.output
    if command == "fit" and message == "data folder not found":
        assert line.endswith(": pass --data DIR (the Kaggle seg_train folder) or set "
                             "SCENETOOL_TRAIN_DATA")


def test_unknown_gives_an_exported_model_its_threshold(work, fitted, tmp_path):
    """Surgery on a model exported without the score: fitted on the run's training images,
    the threshold keeps 95% of its validation photos, measured on photos of nothing."""
    from scenetool.model import SceneModel

    plain = work["tmp"] / "plain" / "scenes.onnx"
    assert _invoke(["export", "tiny", "--runs", work["runs"], "--out", plain, "--unknown",
                    "none"], work["env"]).exit_code == 0
    others = _not_scenes(tmp_path / "others")
    # only the MIT and Apache-2.0 photos may be learnt from; the others are measured
    licences = ["MIT", "GPL-3.0", "Apache-2.0", "unknown", "MIT", "AGPL-3.0"]
    (others / "PROVENANCE.tsv").write_text("file\tlicense\n" + "".join(
        f"set/flat{i}.png\t{licence}\n" for i, licence in enumerate(licences)))
    out, figures = tmp_path / "scored.onnx", tmp_path / "figures"
    card = tmp_path / "card" / "MODEL.md"
    card.parent.mkdir()
    card.write_text("# Model card\n\n## Data\n\nd\n\n## Not a scene\n\nstale words\n\n"
                    "## Model file\n\nm\n")
    result = _invoke(["unknown", plain, "--data", work["data"], "--split",
                      fitted["run"] / "split.txt", "--negatives", others, "--others", others,
                      "--out", out, "--figures", figures, "--card", card], work["env"])
    assert result.exit_code == 0, result.output
    text = card.read_text()
    assert re.findall(r"^## .*", text, flags=re.M) == [
        "## Data", "## Calibration", "## Not a scene", "## Model file"]
    assert "stale words" not in text
    assert "Against 3 photos that are not scenes, none of them learnt from" in text
    assert sorted(p.name for p in card.parent.iterdir()) == [
        "MODEL.md", "calibration.png", "roc.png"]
    assert f"the probe learns from 3 photos of {others}" in result.output
    rule = SceneModel(out).meta.unknown
    assert rule.output == "scene_score" and rule.details["scenes_kept"] >= 0.95
    assert rule.details["method"] == "probe"
    assert rule.details["checked_on"]["n"] == 3
    report = json.loads((figures / "unknown.json").read_text())
    assert report["rule"]["threshold"] == rule.threshold
    assert sorted(p.name for p in figures.iterdir()) == [
        "calibration.png", "roc.png", "unknown.json"]
    again = _invoke(["unknown", out, "--data", work["data"], "--split",
                     fitted["run"] / "split.txt", "--out", tmp_path / "twice.onnx"], work["env"])
    assert again.exit_code == 2 and "already has a 'scene_score' output" in again.output


def test_the_probe_without_negatives_is_a_usage_error(work, fitted, exported, tmp_path):
    result = _invoke(["unknown", exported["out"], "--data", work["data"], "--split",
                      fitted["run"] / "split.txt", "--method", "probe",
                      "--out", tmp_path / "x.onnx"], work["env"])
    assert result.exit_code == 2
    assert ("the probe score learns from photos that are not scenes: give --negatives DIR, "
            "or choose another score") in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_speed_and_candidates_compare_models_side_by_side(work, fitted, exported, tmp_path):
    from scenetool.model import SceneModel

    out = exported["out"]
    speed = _invoke(["speed", out, out, "--rounds", 2], work["env"])
    assert speed.exit_code == 0, speed.output
    lines = speed.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{out}: ") and lines[0].endswith(" 1.00x")
    assert "images/s at 32 px" in lines[1]
    registry = tmp_path / "candidates.json"
    result = _invoke(["candidates", f"tiny={out}", "--data", work["data"], "--split",
                      fitted["run"] / "split.txt", "--registry", registry, "--reference",
                      "tiny", "--train-seconds", "tiny=90"], work["env"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(registry.read_text())["candidates"]
    meta = SceneModel(out).meta
    assert row["accuracy"] == meta.extra["val_accuracy"]
    assert row["macro_f1"] == meta.extra["val_macro_f1"]
    assert row["train_seconds"] == 90 and row["params"] == meta.extra["params"]
    assert row["images_per_second"] > 0 and row["extra"]["failed"] == 1  # broken.jpg
    assert "| `tiny` |" in result.output and "1.00x" in result.output
    assert registry.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    again = _invoke(["candidates", f"tiny={out}", "--data", work["data"], "--split",
                     fitted["run"] / "split.txt", "--registry", registry, "--reference", "tiny",
                     "--note", "tiny=the tiny test model"], work["env"])
    assert again.exit_code == 0, again.output
    (row,) = json.loads(registry.read_text())["candidates"]
    # the note given; the time the file carries, as --train-seconds no longer says otherwise
    assert (row["note"], row["train_seconds"]) == ("the tiny test model",
                                                   meta.extra["train_seconds"])


def test_speed_says_how_many_cores_the_timing_got(tmp_path, monkeypatch):
    """A model timed beside other work looks slow; the CPU time its batches got per second
    of their wall time tells the two apart. Fake clocks: each batch takes 2 s of wall time
    and 3 s of CPU time (two threads sharing the cores with something else)."""
    from conftest import build_tiny_model

    from train.reports import speed as speed_mod

    wall, cpu = itertools.count(0.0, 2.0), itertools.count(0.0, 3.0)
    monkeypatch.setattr(speed_mod, "perf_counter", lambda: next(wall))
    monkeypatch.setattr(speed_mod, "process_time", lambda: next(cpu))
    model = build_tiny_model(tmp_path / "tiny.onnx")
    (found,) = speed_mod.throughputs([model], rounds=3)
    assert (found.images_per_second, found.cores_used) == (16.0, 1.5)
    result = CliRunner().invoke(cli, ["speed", str(model), "--rounds", "3"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{model}: 16.0 images/s at 32 px (16.0-16.0) on 1.5 cores, 1.00x\n"


def test_a_candidate_measured_again_keeps_its_note_and_training_time():
    from train.reports.candidates import Candidate, merge

    old = [Candidate("a", note="written once", train_seconds=60.0), Candidate("b", note="b")]
    new = [Candidate("a", accuracy=0.9),
           Candidate("c", accuracy=0.5, train_seconds=5.0, extra={"split": "val.txt"}),
           Candidate("b", note="new note", train_seconds=7.0)]
    rows = merge(old, new)
    assert [(r.name, r.note, r.train_seconds, r.accuracy) for r in rows] == [
        ("a", "written once", 60.0, 0.9), ("b", "new note", 7.0, None),
        ("c", "measured: onnxruntime on val.txt", 5.0, 0.5)]


def test_the_candidates_plot_never_prints_one_name_over_another():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.reports.candidates import place_labels

    # The real table's points: three of equal accuracy, two of them close in speed, and a
    # cluster near the left edge.
    points = [("scenenet", (172.1, 92.40)), ("scenenet-long", (204.4, 93.40)),
              ("scenenet-long-last", (203.6, 93.30)), ("scenenet-long-ema", (199.3, 93.35)),
              ("scenenet-long-128px", (325.4, 93.02)), ("scenenet-swa", (327.5, 93.54)),
              ("scenenet-swa-last", (325.5, 93.11)), ("scenenet-swa-160px", (206.1, 93.26)),
              ("scenenet-kd", (247.4, 93.68)), ("scenenet-kd-swa", (254.0, 93.54)),
              ("scenenet-ens", (265.5, 93.54)), ("scenenet-ens-last", (258.6, 93.78))]
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.scatter([x for _, (x, _) in points], [y for _, (_, y) in points])
    texts = place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    named = {t.get_text(): t.get_window_extent(renderer) for t in texts}
    plt.close(fig)
    assert list(named) == [name for name, _ in points]
    assert [t.xy for t in texts] == [xy for _, xy in points]
    assert texts[0].xyann == (4, 4)  # a name with room goes above right of its point
    assert [name for name, box in named.items()
            if not (frame.x0 <= box.x0 and box.x1 <= frame.x1)] == []  # all inside the axes
    assert [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(named.items(), 2)
            if box_a.overlaps(box_b)] == []
