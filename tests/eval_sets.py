"""Labelled sets built from texts every Python has: its standard library's docstrings.

A function's docstring gives one query and its relevant passage: the summary line is the
query, the rest of the docstring (titled with the module's name) the passage. Other
paragraphs of the modules' own docstrings are passages that no query asks for. Nothing is
downloaded, and the same Python gives the same set; ``bowrt eval``'s tests, its docs and the
export gate's test use it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from pathlib import Path

MODULES = ("argparse", "base64", "bisect", "calendar", "csv", "difflib", "fnmatch", "glob", "gzip", "heapq",
           "inspect", "json", "logging", "os", "pathlib", "pprint", "random", "shutil", "statistics", "string",
           "tarfile", "tempfile", "textwrap", "typing", "urllib.parse", "uuid", "zipfile", "email.utils",
           "http.client", "subprocess", "threading", "datetime", "functools", "contextlib", "copy")


def _paragraphs(doc: str) -> list[str]:
    return [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n") if p.strip()]


def stdlib_pairs() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(pairs, distractors): pairs are (name, summary line, body); distractors (name, module, paragraph)."""
    pairs, distractors, seen = [], [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod_name in MODULES:
            mod = importlib.import_module(mod_name)
            for i, para in enumerate(_paragraphs(mod.__doc__ or "")[1:]):
                if len(para.split()) >= 12:
                    distractors.append((f"{mod_name}#{i}", mod_name, para))
            for name, obj in sorted(vars(mod).items()):
                if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != mod.__name__:
                    continue
                paras = _paragraphs(inspect.getdoc(obj) or "")
                body = " ".join(paras[1:])
                if len(paras) < 2 or len(paras[0].split()) < 4 or len(body.split()) < 12 or paras[0] in seen:
                    continue
                seen.add(paras[0])
                pairs.append((f"{mod_name}.{name}", paras[0], body))
    return pairs, distractors


def write_beir(folder: Path, max_queries: int | None = None) -> Path:
    """A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (one relevant passage a query)."""
    pairs, distractors = stdlib_pairs()
    pairs = pairs[:max_queries] if max_queries else pairs
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for name, _, body in pairs:
            f.write(json.dumps({"_id": f"p:{name}", "title": name.split(".")[0], "text": body}) + "\n")
        for pid, mod, para in distractors:
            f.write(json.dumps({"_id": f"d:{pid}", "title": mod, "text": para}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for name, summary, _ in pairs:
            f.write(json.dumps({"_id": f"q:{name}", "text": summary}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q:{n}\tp:{n}\t1\n" for n, _, _ in pairs), encoding="utf-8")
    return folder
