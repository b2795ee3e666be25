"""The worker process: one peer system, run in another Python (the peer environment's), fed JSON over stdin.

The bench starts ``PYTHON -m benchmarks.harness.peer_worker`` with the checkout's root on
``PYTHONPATH`` (:class:`benchmarks.harness.peer_client.Worker` does it; PYTHON is the peer
environment's, :mod:`benchmarks.harness.peer_env`). One worker holds one system. Protocol,
one request at a time:

- request: one JSON line, ``{"op": ...}``: ``hello``; ``prepare`` (``spec``, ``work``);
  ``load`` (``spec``); ``encode`` (``texts``, ``kind``); ``batches`` (``texts``, ``kind``: the
  adapter's batch groups, ``{"groups": [[index, ...], ...]}``); ``close``;
- reply: one JSON line; a reply with ``nbytes`` is followed by that many bytes, the
  vectors as a ``.npy`` file (``np.save``: dtype and shape travel, values exactly);
- a failure replies ``{"error": msg, "unavailable": bool, "fix": str | None}`` and the
  worker goes on.

``encode`` replies ``seconds``: the time of the adapter's ``encode`` inside the worker.

The worker's own stdout carries the protocol only: fd 1 is pointed at stderr before any
library loads, so a library's prints cannot corrupt a reply.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from benchmarks.harness import systems
from benchmarks.harness.peer_client import WORKER_ENV
from benchmarks.harness.spec import SystemSpec, Unavailable, version

VERSIONS = ("torch", "transformers", "optimum-onnx", "optimum", "sentence-transformers", "onnxruntime", "openvino",
            "nncf", "ctranslate2", "tokenizers", "numpy")


def _reply(out: IO[bytes], head: dict[str, Any], payload: bytes = b"") -> None:
    if payload:
        head = {**head, "nbytes": len(payload)}
    out.write(json.dumps(head).encode() + b"\n" + payload)
    out.flush()


def handle(state: dict[str, Any], req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """One request -> (reply head, payload). ``state`` holds the loaded system."""
    op = req.get("op")
    if op == "hello":
        return {"python": sys.version.split()[0], "executable": sys.executable,
                "versions": {p: v for p in VERSIONS if (v := version(p))}}, b""
    if op == "prepare":
        spec = systems.prepare(SystemSpec.from_json(req["spec"]), Path(req["work"]))
        return {"spec": spec.to_json()}, b""
    if op == "load":
        sys_ = state["system"] = systems.load(SystemSpec.from_json(req["spec"]))
        return {"batching": sys_.batching, "sorts_by_length": sys_.sorts_by_length, "model_bytes": sys_.model_bytes,
                "batches": hasattr(sys_, "batches")}, b""
    if op == "batches":
        if not hasattr(state.get("system"), "batches"):
            raise RuntimeError("batches before load, or a system without batches")
        return {"groups": [[int(i) for i in g] for g in state["system"].batches(req["texts"], req["kind"])]}, b""
    if op == "encode":
        if "system" not in state:
            raise RuntimeError("encode before load")
        texts, kind = req["texts"], req["kind"]
        t0 = time.perf_counter()
        vec = state["system"].encode(texts, kind)
        seconds = time.perf_counter() - t0
        buf = io.BytesIO()
        np.save(buf, np.asarray(vec), allow_pickle=False)
        return {"seconds": seconds}, buf.getvalue()
    raise ValueError(f"unknown op {op!r}; valid: hello, prepare, load, encode, batches, close")


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    state: dict[str, Any] = {}
    for line in inp:
        try:
            req = json.loads(line)
            if req.get("op") == "close":
                _reply(out, {"ok": True})
                return
            head, payload = handle(state, req)
            _reply(out, {"ok": True, **head}, payload)
        except Exception as e:  # every failure goes back to the parent; the worker stays up
            _reply(out, {"error": f"{type(e).__name__}: {e}", "unavailable": isinstance(e, Unavailable),
                         "fix": getattr(e, "fix", None)})


def main() -> int:
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # library prints go to stderr, never into a reply
    sys.stdout = sys.stderr
    os.environ[WORKER_ENV] = "1"
    serve(sys.stdin.buffer, proto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
