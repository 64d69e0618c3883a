"""Timing a command from process start to exit, with the peak memory of that one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchError(Exception):
    """A case could not be measured (a command failed, a result is missing); str() says why."""


@dataclass(frozen=True)
class Finished:
    """One finished command: wall seconds, peak resident memory (MiB) and its output."""

    seconds: float
    peak_rss_mib: float | None
    returncode: int
    output: str


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for commands: this checkout first on PYTHONPATH, so `-m scenetool`
    and `-m bench.naive` run the code being measured whether or not it is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_command(cmd: Sequence[str], env: Mapping[str, str] | None = None,
                ok_codes: Sequence[int] = (0,)) -> Finished:
    """Run `cmd` to completion through `bench.spawn`, which times it and reads its peak RSS;
    raise BenchError on an unexpected exit status.

    Output goes to a temporary file rather than a pipe, which nothing would read while we
    wait: a chatty command could otherwise block on a full pipe.
    """
    env = dict(env or child_env())
    with tempfile.TemporaryDirectory(prefix="bench-spawn-") as tmp:
        result, log_path = Path(tmp) / "result.json", Path(tmp) / "output.log"
        with open(log_path, "wb") as log:
            helper = subprocess.run(python_module("bench.spawn", str(result), "--", *cmd),
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
        output = log_path.read_text("utf-8", "replace")
        if helper.returncode != 0 or not result.is_file():
            raise BenchError(f"bench.spawn failed ({helper.returncode}): {output[-300:]}")
        measured = json.loads(result.read_text("utf-8"))
    if measured["returncode"] not in ok_codes:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise BenchError(
            f"{' '.join(cmd[1:4])} ... exited {measured['returncode']}: {tail[-300:]}")
    kib = measured["maxrss_kib"]
    return Finished(measured["seconds"], kib / 1024 if kib is not None else None,
                    measured["returncode"], output)
