"""What export keeps off the user's terminal: third-party progress bars and tracer warnings.

``bowrt export`` prints its own progress, one line a step. Left alone, transformers
draws a "Loading weights" bar for every model it loads and the TorchScript exporter
warns about transformers' mask code (a tensor read as a Python bool; ``aten::index``
exported through Gather, "incorrect if indices include negative values"). Those
warnings are about traced graphs in general; this graph's numbers are measured against
PyTorch right after the export by the parity gate, which fails the export where they
would matter. Both are switched off for the ``with`` block only and restored after, so a
caller's own settings survive; every other warning still shows.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

TRACER_MESSAGES = (
    "Converting a tensor to a Python boolean might cause the trace to be incorrect",
    "Exporting aten::index operator of advanced indexing",
)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' (and huggingface_hub's) progress bars off inside the block."""
    try:
        from transformers.utils import logging as tf_logging
    except ImportError:  # nothing to silence
        yield
        return
    was_on = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            tf_logging.enable_progress_bar()


@contextlib.contextmanager
def no_tracer_warnings() -> Iterator[None]:
    """The exporter's generic warnings about transformers' mask code (see the module docstring) off."""
    with warnings.catch_warnings():
        for message in TRACER_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        yield
