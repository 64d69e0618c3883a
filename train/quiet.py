"""TensorFlow without its start-up notices.

Importing TensorFlow prints, straight to file descriptor 2 and before any logging setting
applies, that oneDNN custom operations are on (and an absl line about log messages before
InitializeLog). They say nothing a user can act on. `import_tensorflow` imports it with
descriptor 2 captured and passes on every other line, so real errors still show.
"""

from __future__ import annotations

import os
import sys
import tempfile

NOISE = (
    "oneDNN custom operations are on",
    "All log messages before absl::InitializeLog() is called",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


def import_tensorflow() -> None:
    """Import TensorFlow once, dropping the NOISE lines it writes to stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace")
    for line in text.splitlines():
        if line.strip() and not any(noise in line for noise in NOISE):
            print(line, file=sys.stderr)
