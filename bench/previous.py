"""The model the shipped one replaced, for `make bench`'s speed comparison between them.

A new model must not cost users speed (issue 10: >= 0.9x the old model's throughput), so
the benchmark times the shipped model and its predecessor side by side. The predecessor is
not kept as a file in the repository: it is read from git history (`git show REV:PATH`)
into the benchmark's temporary folder, or given as a file with `--previous FILE`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.measure import REPO_ROOT, BenchError

# The model shipped before issue 10's retraining: scenenet, 92.40% on exported/val_split.txt.
PREVIOUS_REV = "afc76c581f4f4a8fb92890a6023b5ff031461436"
MODEL_IN_REPO = "scenetool/models/scenes.onnx"


def fetch(spec: str, dest: Path, repo: Path = REPO_ROOT) -> Path:
    """The previous model as a file: `spec` itself when it names one, else the shipped
    model's file at git revision `spec` of `repo`, written to `dest`."""
    given = Path(spec)
    if given.is_file():
        return given
    try:
        done = subprocess.run(["git", "-C", str(repo), "show", f"{spec}:{MODEL_IN_REPO}"],
                              capture_output=True, check=False)
    except OSError as exc:
        raise BenchError(f"cannot read the previous model from git: {exc}") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise BenchError(f"cannot read {MODEL_IN_REPO} at {spec[:12]} from git history "
                         f"({' '.join(reason) or 'git failed'}); give --previous FILE")
    dest.write_bytes(done.stdout)
    return dest
