"""``bowrt eval``: what a bundle (int8, a new export) does to retrieval, on the user's own labelled data.

    from bowrt.eval import evaluate
    res = evaluate(["bundles/fp32", "bundles/int8"], "my-beir-set/", "eval-out/")

BEIR sets give Recall@1/5/20/100, MRR@10 and nDCG@10; DPR sets (questions with answer
strings, the bowdpr paper's setup) give top-5/20/100 answer accuracy. Every bundle after
the first is compared with the first: top-k overlap, a paired bootstrap 95 % interval of
each metric's difference, and the queries whose hits changed.

The steps, a module each: :mod:`~bowrt.eval.data` (the two layouts, checked line by line),
:mod:`~bowrt.eval.answers` (DPR's answer match), :mod:`~bowrt.eval.search` (exact top-k,
bounded memory; FAISS optional), :mod:`~bowrt.eval.metrics`, :mod:`~bowrt.eval.run`
(encode, search, score, compare) and :mod:`~bowrt.eval.report` (eval.json, eval.md, the plot).
It needs the runtime only (numpy, onnxruntime, tokenizers); the plot needs matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy, so that `bowrt --help` (which lists `eval`) loads no numpy: name -> module.
_EXPORTS = {"EvalSet": "data", "load": "data", "EvalSettings": "run", "evaluate": "run",
            "metrics": None, "search": None, "answers": None, "data": None, "report": None, "run": None}
__all__ = ["EvalSet", "EvalSettings", "evaluate", "load"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bowrt.eval' has no attribute {name!r}")
    module = importlib.import_module(f"bowrt.eval.{_EXPORTS[name] or name}")
    return module if _EXPORTS[name] is None else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
