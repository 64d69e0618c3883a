"""Engines: what turns a stream of walked items into batches of results.

An engine has one method, `batches(items) -> Iterator[list[Result]]`: every item comes
back as exactly one Result, in input order, a batch at a time. The decode and label steps
every engine shares live in `engines.common`; `engines.local` runs them in a thread pool
with onnxruntime in this process.
"""

from scenetool.engines.common import Engine, Result, Settings

__all__ = ["Engine", "Result", "Settings"]
