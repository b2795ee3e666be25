"""bowrt: an optimized inference engine for the bowdpr dense passage retriever.

``from bowrt import Encoder`` gives the lean runtime (onnxruntime, tokenizers,
numpy only). The export stage lives in :mod:`bowrt.export` and needs the
``export`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bowrt.errors import BowrtError

from bowrt._version import __version__
__all__ = ["BowrtError", "Encoder", "__version__"]

if TYPE_CHECKING:
    from bowrt.runtime import Encoder


def __getattr__(name: str) -> Any:
    # Lazy so that `import bowrt` (e.g. for `bowrt verify`) loads no onnxruntime.
    if name == "Encoder":
        from bowrt.runtime import Encoder

        return Encoder
    raise AttributeError(f"module 'bowrt' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too (tab completion, dir(bowrt)), still without importing them.
    return sorted(set(globals()) | set(__all__))
