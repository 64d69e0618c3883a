"""The Ray engine: the same classify job, with the model run by Ray Data on a Ray cluster.

The driver (this process) walks, takes what the store already has and commits results,
exactly as with the local engine (`scenetool.job`). What it hands Ray is the rest of the
paths, not the images: a Dataset that `map_batches` feeds to `Classifier` on an actor
pool. Each actor builds one model session, once, from the model's bytes, which the driver
puts in the object store (workers need no copy of the model file); it reads and decodes
each image with scenetool's own decoder (`engines.common.decode`) and returns the model's
probabilities, which stream back (`iter_batches`) to be labelled by the step the local
engine uses (`engines.common.label`). A file that cannot be read comes back as a row with
its reason, never as a failed task. Ray restarts a killed actor and retries its batch.

Ray is imported only by this module, and only when a run asks for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager
from itertools import islice
from typing import Any

import numpy as np

from scenetool.engines import common
from scenetool.engines.common import Result, Settings
from scenetool.errors import DecodeError, RayError, ScenetoolError, UsageError
from scenetool.inputs.walk import Item
from scenetool.model import SceneModel

INSTALL_HINT = "pip install 'scenetool[ray]'"
# Paths handed to Ray per Dataset: bounds the driver's memory on archives of millions of
# images; each chunk costs one actor-pool start (a second or two), amortised over hours.
CHUNK = 200_000
# Batches per Ray task: every task costs the driver, the raylet and the actor a few
# milliseconds, so a task carries several batches (measured here: 2 CPU-seconds less over
# 7,335 photos than a task per batch), but each actor still gets at least
# TASKS_PER_ACTOR of them, so that a small run spreads over every actor.
BATCHES_PER_TASK = 4
TASKS_PER_ACTOR = 4
# Tasks queued on an actor beyond the one it runs: enough that it never waits for the
# next, few enough that no actor is left with a queue when the others run out of work.
TASKS_IN_FLIGHT = 2
_LOCAL_HOST = "127.0.0.1"


def require_ray() -> None:
    """A usage error naming the extra unless Ray Data is installed; imports nothing, since
    a local Ray must be configured before `ray` is first imported (see `local_ray`)."""
    if not all(importlib.util.find_spec(name) for name in ("ray", "pyarrow", "pandas")):
        raise UsageError(f"--engine ray needs the ray extra: {INSTALL_HINT}")


def import_ray() -> Any:
    """The `ray` module, with Ray Data loaded."""
    require_ray()
    import ray
    import ray.data  # noqa: F401

    return ray


class Classifier:
    """One model replica on a Ray actor: built once, then called with batches of paths."""

    def __init__(self, model_ref: Any, name: str):
        import ray

        # One intra-op thread: Ray runs one replica per CPU it schedules.
        self.model = SceneModel(name, threads=1, data=ray.get(model_ref))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        meta = self.model.meta
        height, width = meta.image_size
        size = len(batch["index"])
        inputs = np.empty((size, height, width, 3), np.float32)
        probs = np.full((size, len(meta.labels)), np.nan, np.float32)
        scores = np.full(size, np.nan, np.float32)  # NaN: the model has no scene score
        errors = [""] * size  # a string column: Arrow would turn all-None into NaN
        decoded_rows: list[int] = []
        for row, (path, error) in enumerate(zip(batch["path"], batch["error"], strict=True)):
            decoded = common.decode(meta, Item(str(path), error=str(error) or None))
            if isinstance(decoded, DecodeError):
                errors[row] = str(decoded)
            else:
                common.to_input(decoded, meta, inputs[len(decoded_rows)])
                decoded_rows.append(row)
        if decoded_rows:
            found, found_scores = self.model.predict_scored(inputs[: len(decoded_rows)])
            probs[decoded_rows] = found
            if found_scores is not None:
                scores[decoded_rows] = found_scores
        return {"index": batch["index"], "probs": probs, "scores": scores,
                "error": np.array(errors, object)}


class RayEngine:
    """Classifies on Ray. Ray is reached, or started, when the first image needs the model
    (a run the store answers entirely never starts it); `close` lets it go."""

    def __init__(self, model: SceneModel, settings: Settings, address: str | None = None,
                 workers: int | None = None):
        self.model, self.settings = model, settings
        self.address, self.workers = address, workers
        self._held = ExitStack()
        self._ray: Any = None
        self._model_ref: Any = None
        self._replicas = 0

    def close(self) -> None:
        self._model_ref = None
        self._held.close()

    def batches(self, items: Iterable[Item]) -> Iterator[list[Result]]:
        """A list of Results per batch, in input order."""
        iterator = iter(items)
        while chunk := list(islice(iterator, CHUNK)):
            self._connect()
            try:
                yield from self._chunk(chunk)
            except ScenetoolError:
                raise
            except Exception as exc:  # a failed Ray task or a lost cluster
                cause = _scenetool_cause(exc)
                if cause is not None:
                    raise cause from None
                raise RayError(f"the run on Ray failed: {_first_line(exc)}") from None

    def _connect(self) -> None:
        if self._ray is None:
            self._replicas = self._held.enter_context(connected(self.address, self.workers))
            self._ray = import_ray()
            _configure_data(self._ray)
            self._model_ref = self._ray.put(self.model.data)

    def _chunk(self, chunk: list[Item]) -> Iterator[list[Result]]:
        ray, batch_size = self._ray, max(self.settings.batch_size, 1)
        rows = [{"index": i, "path": item.path, "error": item.error or ""}
                for i, item in enumerate(chunk)]
        replicas = min(self._replicas, len(chunk))
        task_rows = rows_per_task(len(rows), batch_size, replicas)
        dataset = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // task_rows))
        dataset = dataset.map_batches(
            Classifier, fn_constructor_kwargs={"model_ref": self._model_ref,
                                               "name": self.model.path.name},
            batch_size=batch_size, batch_format="numpy", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(
                size=replicas, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT))
        # A batch at a time, as the local engine yields them: one store transaction each.
        # Closed on the way out, also when left early, so Ray Data's executor stops while
        # this run's Ray is still up (its own cleanup waits for garbage collection).
        outs = iter(dataset.iter_batches(batch_size=batch_size, batch_format="numpy"))
        with closing(outs):
            yield from self._labelled(outs, chunk)

    def _labelled(self, outs: Iterator[dict], chunk: list[Item]) -> Iterator[list[Result]]:
        """Ray Data's output batches as lists of Results for `chunk`'s items."""
        labels, threshold = self.model.labels, self.model.unknown_threshold
        for out in outs:
            results = []
            for index, probs, score, error in zip(out["index"], out["probs"], out["scores"],
                                                  out["error"], strict=True):
                item = chunk[int(index)]
                results.append(Result(item, error=str(error)) if error else
                               common.label(probs, labels, self.settings, item,
                                            None if np.isnan(score) else float(score),
                                            threshold))
            yield results


def rows_per_task(rows: int, batch_size: int, replicas: int) -> int:
    """How many paths one Ray task classifies: BATCHES_PER_TASK batches, fewer when that
    would leave an actor with under TASKS_PER_ACTOR tasks."""
    batches = rows // (batch_size * max(replicas, 1) * TASKS_PER_ACTOR)
    return batch_size * max(1, min(BATCHES_PER_TASK, batches))


def _configure_data(ray: Any) -> None:
    """Ray Data quiet on our stderr (the CLI draws its own progress) and in input order,
    without the per-task memory sampling thread its statistics use (about 2% of each
    actor's CPU here, for figures nobody reads)."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Advice for tuning pipelines (e.g. fewer inputs than actors on a small run).
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.execution_options.preserve_order = True
    context.memory_usage_poll_interval_s = None


def _driver_environment() -> dict[str, str]:
    """Ray's C++ logging quiet on our stderr unless the user set it: Ray Data makes it print
    an alarming, harmless error about actor arguments held in the object store by this very
    driver (ray-project/ray#57733)."""
    return {"RAY_BACKEND_LOG_LEVEL": os.environ.get("RAY_BACKEND_LOG_LEVEL", "fatal")}


def _local_environment() -> dict[str, str]:
    """What a private local Ray needs in the environment before `ray` is imported: token
    authentication on (with a token made for this run unless one is configured), and
    every address on the loopback interface (Ray's own switch for single-node use)."""
    env = {**_driver_environment(), "RAY_AUTH_MODE": "token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return env


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (Ray reads them when it is imported and
    started, and the processes it starts inherit them), then as they were."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def local_ray(num_cpus: int) -> Iterator[Any]:
    """Start a Ray on this machine for the duration of the block, then shut it down.

    It advertises and listens on 127.0.0.1 only, keeps token authentication on, and runs
    without the dashboard, the job server and the client server. Its session files go to
    a temporary folder that is removed afterwards.
    """
    temp_dir = tempfile.mkdtemp(prefix="scenetool-ray-")
    with _environment(_local_environment()):
        ray = import_ray()
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     _node_ip_address=_LOCAL_HOST, _temp_dir=temp_dir, log_to_driver=False,
                     logging_level=logging.WARNING)
        except Exception as exc:  # Ray raises many kinds of errors while starting
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise RayError(f"could not start a local Ray: {_first_line(exc)}") from None
        try:
            _check_private(ray)
            yield ray
        finally:
            with _sigterm_ignored():
                _stop_autoscaler_monitor()
                ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def _sigterm_ignored() -> Iterator[None]:
    """SIGTERM ignored while the run's own Ray is torn down.

    The local Ray's head node puts a SIGTERM handler into this process that drains the
    node (up to a minute) and then exits with 1. A SIGTERM that reaches the driver while
    Ray stops (seen in tests after Ctrl-C: exit 1 instead of 130, a minute late) would
    turn a finished or interrupted run into a failed one; the process is ending anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_autoscaler_monitor() -> None:
    """Stop the local Ray's autoscaler monitor, which a one-machine Ray has no use for.

    `ray.shutdown` stops it after the GCS; its SIGTERM handler then reports to the stopped
    GCS and hangs until Ray kills it after a second's grace: a second of every run spent
    waiting. Killed first, it takes nothing with it (it holds no work and no results).
    Best effort: where Ray keeps its processes is not public API, and if that changes the
    run only takes a second longer.
    """
    try:
        from ray._private import ray_constants
        from ray._private.worker import _global_node

        monitors = _global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception:  # only a speed-up: Ray's own shutdown follows and stops it anyway
        pass


def _check_private(ray: Any) -> None:
    """Refuse to run on a local Ray that is reachable from the network or unauthenticated
    (possible when ray was imported before `local_ray` could configure it)."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    gcs = ray.get_runtime_context().gcs_address
    if not gcs.startswith(f"{_LOCAL_HOST}:"):
        raise RayError(f"the local Ray listens on {gcs}, not on {_LOCAL_HOST}: refusing to run")
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise RayError("the local Ray started without token authentication: refusing to run")


@contextmanager
def connected(address: str | None, workers: int | None) -> Iterator[int]:
    """Ray for one run, and how many model replicas to run on it.

    Already connected (a test session, a script that called `ray.init`): use that Ray.
    `address`: connect to that cluster, and disconnect afterwards. Neither: start a local
    Ray for the run (`local_ray`) and shut it down afterwards.
    """
    if _already_connected():
        yield workers or _cluster_cpus(import_ray())
    elif address:
        _check_reachable(address)
        with _environment(_driver_environment()):
            ray = import_ray()
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except Exception as exc:  # ConnectionError, AuthenticationError, ValueError, ...
                raise RayError(f"cannot connect to Ray at {address}: "
                               f"{_first_line(exc)}") from None
            try:
                yield workers or _cluster_cpus(ray)
            finally:
                ray.shutdown()
    else:
        with local_ray(max(workers or os.cpu_count() or 1, 1)) as ray:
            yield workers or _cluster_cpus(ray)


def _check_reachable(address: str) -> None:
    """A HOST:PORT that refuses connections or does not answer is reported at once: Ray
    itself would retry it for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RayError(f"cannot reach Ray at {address}: {reason}") from None


def _already_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _cluster_cpus(ray: Any) -> int:
    return max(int(ray.cluster_resources().get("CPU", 1)), 1)


@contextmanager
def ray_engine(model: SceneModel, settings: Settings, address: str | None = None,
               workers: int | None = None) -> Iterator[RayEngine]:
    """A RayEngine for the block: Ray as `connected` says, let go at the end."""
    require_ray()
    engine = RayEngine(model, settings, address, workers)
    try:
        yield engine
    finally:
        engine.close()


def _scenetool_cause(exc: BaseException) -> ScenetoolError | None:
    """The ScenetoolError a failed Ray task raised (e.g. a model that cannot run), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ScenetoolError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
