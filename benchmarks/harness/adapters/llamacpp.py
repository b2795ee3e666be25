"""``llama.cpp``: BERT embeddings through llama-cpp-python on a GGUF Q8_0 model — when it installs.

On this project's machines it does not: the package index has no binary wheel of
llama-cpp-python (``pip download --only-binary=:all: llama-cpp-python`` finds none), so
``pip install`` compiles llama.cpp from source (cmake and a C++ toolchain; tens of
minutes on 2 cores), and the GGUF conversion (``convert_hf_to_gguf.py``) ships in
llama.cpp's source tree, not in the wheel. The peer reports why it cannot run instead.
"""

from __future__ import annotations

import importlib.util

from benchmarks.harness.spec import SystemSpec, Unavailable

WHY_NOT = ("llama-cpp-python is not installed: the package index here has no binary wheel of it (a source build of "
           "llama.cpp takes tens of minutes on 2 cores), and the GGUF conversion script is not part of the wheel")


def check() -> None:
    """Raise :class:`Unavailable`, always: why llama.cpp cannot run here."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise Unavailable(WHY_NOT)
    raise Unavailable("llama-cpp-python is installed, but the bench has no GGUF Q8_0 conversion of the model "
                      "(convert_hf_to_gguf.py from llama.cpp's source tree); no adapter yet")


def load(spec: SystemSpec) -> None:
    check()
