"""scenetool: sort photos of scenes into buildings, forest, glacier, mountain, sea and street.

    import scenetool

    for result in scenetool.classify("photos"):
        print(result.path, result.label, f"{result.confidence:.0%}")

The API (`classify`, `watch`, `open_model`; see `scenetool.api`) loads on first use, so
importing the package is cheap: onnxruntime and numpy are loaded when a model is opened,
and TensorFlow never is.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: `import scenetool` stays cheap
__version__ = "0.1.0"
__all__ = ["classify", "watch", "open_model", "__version__"]

if TYPE_CHECKING:
    from scenetool.api import classify, open_model, watch


def __getattr__(name: str) -> object:
    if name in ("classify", "watch", "open_model"):
        from scenetool import api

        return getattr(api, name)
    raise AttributeError(f"module 'scenetool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
