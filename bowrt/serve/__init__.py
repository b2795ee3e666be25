"""HTTP front end over the dynamic batcher (needs the ``serve`` extra: ``pip install 'bowrt[serve]'``).

    bowrt serve bundles/fp32 --port 8080

Routes, errors and metrics are described in ``docs/serving.md`` and in :mod:`bowrt.serve.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServeConfig", "create_app", "serve"]

if TYPE_CHECKING:
    from bowrt.serve.app import ServeConfig, create_app, serve


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not fail (or pull in fastapi) before it is used.
    if name in __all__:
        from bowrt.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'bowrt.serve' has no attribute {name!r}")
