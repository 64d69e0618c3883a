"""Run one command and report its wall time and peak RSS: `python -m bench.spawn OUT -- CMD...`.

Writes {"seconds", "maxrss_kib", "returncode"} as JSON to OUT; the command's output goes to
this process's stdout and stderr. The benchmark starts a fresh one of these per measurement
because Linux carries a process's peak RSS across exec: a command started straight from the
benchmark (which holds hundreds of MB of decoded images) would report the benchmark's peak,
not its own. This helper is small, so its children's ru_maxrss is theirs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def _children_maxrss_kib() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # macOS says bytes


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.spawn OUT -- CMD...", file=sys.stderr)
        return 2
    out, cmd = argv[0], argv[2:]
    started = time.perf_counter()
    returncode = subprocess.call(cmd, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"seconds": seconds, "maxrss_kib": _children_maxrss_kib(),
                   "returncode": returncode}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
