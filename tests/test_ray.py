"""The Ray engine on a real local Ray (one for the session, see conftest.ray_cluster):
same results as the local engine, reuse, a killed actor, and what listens during a run.

`ray` is never imported at module level here: the session's Ray must be configured
before ray is first imported.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import grey, make_image, scenetool

from scenetool.cli import cli
from scenetool.engines.common import Settings
from scenetool.job import ClassifyJob
from scenetool.model import open_model
from scenetool.store import Store

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ("red", "green", "blue")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def make_photos(folder: Path, n: int, size=(48, 40), fmt: str = "jpg") -> list[Path]:
    return [make_image(folder / f"{i:04d}.{fmt}", COLOURS[i % 3], size=size)
            for i in range(n)]


def make_bad(folder: Path) -> None:
    """Files that cannot be classified, each for its own reason."""
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    good = make_image(folder / "whole.jpg", "red", size=(200, 200)).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "whole.jpg").unlink()


def by_path(output: str) -> dict[str, dict]:
    return {row["path"]: row for row in map(json.loads, output.splitlines())}


# -- processes and sockets of this test session's Ray (Linux /proc) ------------------------

def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root`: the Ray this process started."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        found[child] = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                frontier.append(child)
    return found


def listening_sockets(pids) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket the processes `pids` hold."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            if len(raw) == 4:
                address = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # /proc stores IPv6 as four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                address = socket.inet_ntop(socket.AF_INET6, words)
            listening[fields[9]] = (address, int(hex_port, 16))
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = target[8:-1]
                if inode in listening:
                    found.append((*listening[inode], pid))
    return found


def http_status(port: int) -> bytes | None:
    """The status line 127.0.0.1:port answers an HTTP request with, or None when what
    listens there does not speak HTTP (Ray's gRPC servers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.settimeout(2)
            conn.sendall(b"GET /api/jobs/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            answer = conn.recv(64)
    except OSError:
        return None
    return answer.split(b"\r\n")[0] if answer.startswith(b"HTTP/") else None


def run_job(paths: list[str], store: Store, settings: Settings = Settings(batch_size=8),
            on_first_row: Callable[[], None] | None = None, **engine_args) -> ClassifyJob:
    """A classify run on the session's Ray, calling `on_first_row` once, mid-run."""
    from scenetool.engines.ray import ray_engine

    model = open_model()
    with ray_engine(model, settings, **engine_args) as engine:
        job = ClassifyJob(model, store, paths, settings, engine=engine)
        for _row in job:
            if on_first_row:
                on_first_row()
                on_first_row = None
    return job


# -- tests ----------------------------------------------------------------------------------

def test_ray_gives_the_local_engines_results(ray_cluster, tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 24)
    grey(photos / "grey.png")  # a third for each colour: "unknown" below --min-confidence
    make_bad(photos)
    options = ("--top-k", "3", "--min-confidence", "0.5", "--batch-size", "5", "--json", "-")
    local = invoke("classify", str(photos), "--store", str(tmp_path / "local.db"), *options)
    distributed = invoke("classify", str(photos), "--engine", "ray", "--store",
                         str(tmp_path / "ray.db"), *options)
    assert local.exit_code == distributed.exit_code == 1  # the bad files failed
    expected, got = by_path(local.stdout), by_path(distributed.stdout)
    assert list(got) == list(expected)  # every image, in the same order
    assert sum(1 for row in got.values() if row["error"]) == 3
    assert got[str(photos / "grey.png")]["label"] == "unknown"
    for path, row in expected.items():
        assert got[path]["label"] == row["label"], path
        assert got[path]["error"] == row["error"], path
        if row["confidence"] is not None:
            assert abs(got[path]["confidence"] - row["confidence"]) <= 1e-5, path
            assert [t["label"] for t in got[path]["top_k"]] == [t["label"] for t in row["top_k"]]
    # The store `report` reads has the same rows.
    report = invoke("report", "--store", str(tmp_path / "ray.db"), "--json", "-")
    assert by_path(report.stdout).keys() == expected.keys()


def test_rerun_reuses_everything(ray_cluster, tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 12)
    db = str(tmp_path / "ray.db")
    first = invoke("classify", str(photos), "--engine", "ray", "--store", db, "-q")
    assert first.exit_code == 0
    again = invoke("classify", str(photos), "--engine", "ray", "--store", db, "-q")
    assert again.exit_code == 0
    assert "12 image(s): 0 classified, 12 already in the store" in " ".join(again.output.split())
    with Store(db) as store:
        assert store.count(2) == 12 and all(row.reused for row in store.rows(2))
    forced = invoke("classify", str(photos), "--engine", "ray", "--store", db, "-q", "--force")
    assert "12 image(s): 12 classified, 0 already" in " ".join(forced.output.split())


def test_no_dashboard_job_or_client_server_during_a_run(ray_cluster, tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 64)
    seen: dict = {}

    def look() -> None:
        processes = descendants(os.getpid())
        seen["processes"] = processes
        seen["sockets"] = listening_sockets(processes)

    with Store(tmp_path / "s.db") as store:
        job = run_job([str(photos)], store, on_first_row=look)
    assert job.tally.classified == 64
    processes, sockets = seen["processes"], seen["sockets"]
    commands = " ".join(processes.values())
    assert "gcs_server" in commands and "raylet" in commands  # we looked at the right Ray
    assert "client/server" not in commands and "client_server" not in commands
    assert sockets, "found no listening socket at all"
    for address, port, pid in sockets:
        assert address in ("127.0.0.1", "::ffff:127.0.0.1"), (address, port, processes[pid])
        assert port not in (8265, 10001, 52365), port  # dashboard and jobs, client, agent
        # Ray still runs a minimal dashboard process (usage stats only, no frontend) and
        # an agent: neither may listen.
        program = " ".join(processes[pid].split()[:2])  # the executable and its script
        assert "dashboard" not in program.lower(), processes[pid]
        # The one HTTP server is the runtime-env agent, and it wants the token.
        status = http_status(port)
        if status is not None:
            assert "RuntimeEnvAgent" in program and b" 401 " in status, (status, program)
    assert ray_cluster.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_the_local_ray_refuses_a_client_without_its_token(ray_cluster):
    gcs = ray_cluster.get_runtime_context().gcs_address
    code = f"import ray; ray.init(address={gcs!r})"
    for token in ("not-the-token", None):
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or "",
               "RAY_AUTH_TOKEN_PATH": os.devnull if token is None else ""}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode != 0
        assert "uthenticat" in result.stderr, result.stderr[-500:]


def test_a_killed_actor_loses_and_repeats_nothing(ray_cluster, tmp_path):
    photos = tmp_path / "photos"
    n = 240
    make_photos(photos, n, size=(400, 300), fmt="png")
    killed: list[int] = []

    def kill_an_actor() -> None:
        actors = [pid for pid, command in descendants(os.getpid()).items()
                  if "MapWorker" in command and "Classifier" in command]
        assert actors, "no Classifier actor found"
        os.kill(actors[0], signal.SIGKILL)
        killed.append(actors[0])
        stored_at_kill.append(stored(tmp_path / "s.db"))

    stored_at_kill: list[int] = []
    with Store(tmp_path / "s.db") as store:
        job = run_job([str(photos)], store, Settings(batch_size=4), on_first_row=kill_an_actor)
        assert killed and stored_at_kill[0] < n  # killed mid-run, not after
        assert job.tally.classified == n and job.tally.failed == 0
        paths = [row.path for row in store.rows(job.run_id)]
    assert len(paths) == n and len(set(paths)) == n  # every image once, none twice
    assert set(paths) == {str(p) for p in photos.iterdir()}
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)


def test_a_sigterm_while_its_ray_stops_does_not_turn_the_exit_code(tmp_path):
    """Ray's head node would answer a SIGTERM reaching the driver during teardown by
    draining and exiting 1; a run ending with 130 (Ctrl-C) must still end with 130."""
    script = (
        "import os, signal, sys\n"
        "from scenetool.engines import ray as engine\n"
        "with engine.local_ray(1) as ray:\n"
        "    shutdown = ray.shutdown\n"
        "    def shutdown_signalled():\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        shutdown()\n"
        "    ray.shutdown = shutdown_signalled\n"
        "    sys.exit(130)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]


def stored(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_ctrl_c_keeps_what_was_done_and_shuts_its_ray_down(ray_cluster, tmp_path):
    """A real process that starts its own local Ray: Ctrl-C mid-run exits 130 with what
    was committed kept, no process of its Ray outlives it, and the next run resumes."""
    photos = tmp_path / "photos"
    n = 300
    make_photos(photos, n, size=(400, 300), fmt="png")
    db = tmp_path / "int.db"
    # CI may run with SIGINT ignored; give the child the default, as a terminal would.
    proc = scenetool("classify", str(photos), "--engine", "ray", "--store", str(db),
                     "--batch-size", "4", "-q",
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    its_ray: dict[int, str] = {}
    deadline = time.time() + 180
    while stored(db) < 8 and proc.poll() is None and time.time() < deadline:
        its_ray.update(descendants(proc.pid))
        time.sleep(0.05)
    its_ray.update(descendants(proc.pid))
    proc.send_signal(signal.SIGINT)
    gone = poll_ends(its_ray, proc)  # the order its processes ended in
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err
    kept = stored(db)
    assert 0 < kept < n
    assert err.strip().splitlines()[-1] == f"interrupted: {kept} results kept in run 1 of {db}"
    assert any("raylet" in command for command in its_ray.values())
    assert not [its_ray[pid] for pid in its_ray if pid not in gone]
    # Its autoscaler monitor was stopped first: stopped after the GCS, it would hang a
    # second reporting to the stopped GCS before Ray killed it (see local_ray).
    monitor, gcs = (next(pid for pid, command in its_ray.items() if name in command)
                    for name in ("autoscaler/_private/monitor.py", "gcs_server"))
    assert gone[monitor] <= gone[gcs]
    resumed = invoke("classify", str(photos), "--store", str(db), "-q")
    assert (f"{n} image(s): {n - kept} classified, {kept} already in the store"
            in " ".join(resumed.output.split()))


def poll_ends(pids: dict[int, str], proc: subprocess.Popen, limit: float = 150) -> dict[int, int]:
    """pid -> the round of a 10 ms poll in which each of `pids` was found gone, until all
    are gone and `proc` has exited (or `limit` seconds pass)."""
    gone: dict[int, int] = {}
    deadline = time.time() + limit
    for poll in count():
        gone.update((pid, poll) for pid in pids
                    if pid not in gone and not Path(f"/proc/{pid}").exists())
        if (len(gone) == len(pids) and proc.poll() is not None) or time.time() > deadline:
            return gone
        time.sleep(0.01)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("left", ["closed", "interrupted while labelling"])
def test_a_stream_left_mid_way_stops_its_ray_data_work_at_once(ray_cluster, tmp_path,
                                                               monkeypatch, left):
    """Ctrl-C leaves the stream mid-way: suspended (while a row was being shown; the CLI
    then closes it) or unwound by the interrupt, whose traceback the CLI keeps to the end.
    Either way Ray Data's executor is shut down there and then, while the run's Ray is
    still up, and its actors end. Left to garbage collection it went on after its Ray was
    shut down, and a Ctrl-C run exited 1 now and then instead of 130."""
    import threading

    from scenetool import api
    from scenetool.engines import common
    from scenetool.engines.ray import ray_engine

    def actors() -> list[int]:
        return [pid for pid, command in descendants(os.getpid()).items()
                if "MapWorker" in command and "Classifier" in command]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    photos = tmp_path / "photos"
    make_photos(photos, 400)
    model = open_model()
    with ray_engine(model, Settings(batch_size=4)) as engine:
        results = api.classify([str(photos)], model=model, batch_size=4, engine=engine)
        next(results)
        # Ray Data's StreamingExecutor is the thread that runs the dataset.
        running = [thread for thread in threading.enumerate()
                   if thread.name.startswith("StreamingExecutor")]
        assert running and actors()
        if left == "closed":
            results.close()
        else:
            monkeypatch.setattr(common, "label", interrupt)
            with pytest.raises(KeyboardInterrupt) as interrupted:
                list(results)
            assert interrupted.tb is not None  # held, as the CLI holds it
        assert all(executor._shutdown for executor in running)  # Ray Data's own flag
        deadline = time.time() + 60
        while actors() and time.time() < deadline:
            time.sleep(0.1)
        assert not actors()


def test_tasks_carry_several_batches_yet_commit_one_at_a_time(ray_cluster, tmp_path):
    """A Ray task classifies several batches (fewer tasks: less overhead for the driver,
    the raylet and the actors), yet results reach the store a batch per transaction, as
    with the local engine, and are the local engine's results."""
    from scenetool.engines.ray import rows_per_task

    photos = tmp_path / "photos"
    make_photos(photos, 96)
    settings = Settings(batch_size=4)
    assert rows_per_task(96, 4, 2) == 12  # this run's tasks carry three batches
    db = tmp_path / "s.db"
    at_first_row: list[int] = []
    with Store(db) as store:
        job = run_job([str(photos)], store, settings, workers=2,
                      on_first_row=lambda: at_first_row.append(stored(db)))
        got = {row.path: (row.label, row.confidence) for row in store.rows(job.run_id)}
    assert at_first_row == [4]  # one batch committed, not a task's three
    local = ClassifyJob(open_model(), None, [str(photos)], settings)
    expected = {row.path: (row.label, row.confidence) for row in local}
    assert got.keys() == expected.keys() and len(got) == 96
    for path, (label, confidence) in expected.items():
        assert got[path][0] == label and abs(got[path][1] - confidence) <= 1e-5, path


def test_rows_per_task():
    from scenetool.engines.ray import rows_per_task

    assert rows_per_task(7335, 32, 2) == 128  # four batches a task
    assert rows_per_task(1000, 32, 2) == 96  # fewer, to give each actor four tasks
    assert rows_per_task(100, 32, 2) == 32  # never under a batch
    assert rows_per_task(100, 32, 0) == 32


def test_workers_option(ray_cluster, tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 6)
    result = invoke("classify", str(photos), "--engine", "ray", "--workers", "1", "-q")
    assert result.exit_code == 0
    assert "6 image(s): 6 classified" in " ".join(result.output.split())


def test_address_and_workers_need_the_ray_engine(tmp_path):
    result = CliRunner().invoke(cli, ["classify", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 2
    assert "Error: --workers needs --engine ray" in result.output


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_without_the_extra_ray_engine_is_a_usage_error(tmp_path):
    make_image(tmp_path / "a.jpg")
    # sys.modules[name] = None is how Python says "not installed" to import and find_spec.
    code = ("import sys; sys.modules['ray'] = None; from scenetool.cli import main; "
            f"sys.argv = ['scenetool', 'classify', {str(tmp_path)!r}, '--engine', 'ray']; "
            "main()")
    result = run_python(code)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ("Error: --engine ray needs the ray extra: pip install 'scenetool[ray]'"
            in result.stderr)


def test_an_address_nothing_listens_on_is_a_one_line_error(tmp_path):
    make_image(tmp_path / "a.jpg")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_python("import sys; from scenetool.cli import main; sys.argv = ['scenetool', "
                        f"'classify', {str(tmp_path)!r}, '--engine', 'ray', '--address', "
                        f"'127.0.0.1:{port}']; main()")
    assert result.returncode == 2
    assert result.stderr == f"Error: cannot reach Ray at 127.0.0.1:{port}: Connection refused\n"


def test_import_and_version_never_import_ray():
    code = ("import sys; import scenetool; from scenetool.cli import main; "
            "sys.argv = ['scenetool', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('ray', 'pyarrow', 'pandas') if m in sys.modules))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
