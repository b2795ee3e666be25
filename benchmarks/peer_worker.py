"""A peer in another Python: a worker process fed JSON over stdin, and the adapter that proxies to it.

The parent (the bench) starts ``PYTHON -m benchmarks.peer_worker`` with the checkout's
root on ``PYTHONPATH``; PYTHON is the peer environment's (:mod:`benchmarks.peer_env`).
One worker holds one system. Protocol, one request at a time:

- request: one JSON line, ``{"op": ...}``: ``hello``; ``prepare`` (``spec``, ``work``);
  ``load`` (``spec``); ``encode`` (``texts``, ``kind``); ``close``;
- reply: one JSON line; a reply with ``nbytes`` is followed by that many bytes, the
  vectors as a ``.npy`` file (``np.save``: dtype and shape travel, values exactly);
- a failure replies ``{"error": msg, "unavailable": bool}`` and the worker goes on.

``encode`` replies ``seconds``: the time of the adapter's ``encode`` inside the worker.
:class:`WorkerSystem` keeps (round trip, inside the worker) per call in ``calls``; the
runner reports the time inside the worker as the figure (what the peer costs a user
who runs it in their own process) and the round trip next to it.

The worker's own stdout carries the protocol only: fd 1 is pointed at stderr before any
library loads, so a library's prints cannot corrupt a reply.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

WORKER_ENV = "BOWRT_PEER_WORKER"  # set in a worker: its systems run in-process, never in a further worker
VERSIONS = ("torch", "transformers", "optimum-onnx", "optimum", "sentence-transformers", "onnxruntime", "openvino",
            "nncf", "ctranslate2", "tokenizers", "numpy")
START_TIMEOUT_S = 600.0  # export and quantization of a peer's model happen in prepare


# --- the worker ------------------------------------------------------------------------------
def _reply(out: IO[bytes], head: dict[str, Any], payload: bytes = b"") -> None:
    if payload:
        head = {**head, "nbytes": len(payload)}
    out.write(json.dumps(head).encode() + b"\n" + payload)
    out.flush()


def handle(state: dict[str, Any], req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """One request -> (reply head, payload). ``state`` holds the loaded system."""
    from benchmarks import systems

    op = req.get("op")
    if op == "hello":
        return {"python": sys.version.split()[0], "executable": sys.executable,
                "versions": {p: v for p in VERSIONS if (v := systems.version(p))}}, b""
    if op == "prepare":
        spec = systems.prepare(systems.SystemSpec.from_json(req["spec"]), Path(req["work"]))
        return {"spec": spec.to_json()}, b""
    if op == "load":
        sys_ = state["system"] = systems.load(systems.SystemSpec.from_json(req["spec"]))
        return {"batching": sys_.batching, "sorts_by_length": sys_.sorts_by_length, "model_bytes": sys_.model_bytes}, b""
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
    raise ValueError(f"unknown op {op!r}; valid: hello, prepare, load, encode, close")


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from benchmarks.systems import Unavailable

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
            _reply(out, {"error": f"{type(e).__name__}: {e}", "unavailable": isinstance(e, Unavailable)})


def main() -> int:
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # library prints go to stderr, never into a reply
    sys.stdout = sys.stderr
    os.environ[WORKER_ENV] = "1"
    serve(sys.stdin.buffer, proto)
    return 0


# --- the parent's side -----------------------------------------------------------------------
class WorkerError(RuntimeError):
    """The worker failed a request (not an availability problem), or died."""


class Worker:
    """One worker process; :meth:`call` sends a request and returns (reply head, array or None)."""

    def __init__(self, python: str | os.PathLike[str]):
        from benchmarks.coldstart import _child_env

        self.stderr = tempfile.TemporaryFile()  # the worker's log, quoted when it fails
        env = _child_env()
        env[WORKER_ENV] = "1"
        self.proc = subprocess.Popen([str(python), "-m", "benchmarks.peer_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        try:
            self.hello, _ = self.call({"op": "hello"})
        except BaseException:
            self.close()
            raise

    def _log_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-1500:]

    def call(self, req: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None]:
        from benchmarks.systems import Unavailable

        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:  # a dead worker: a broken pipe
            line = b""
        if not line:
            code = self.proc.wait(timeout=10)
            raise WorkerError(f"the peer worker exited ({code}) during {req.get('op')}: {self._log_tail()}")
        head = json.loads(line)
        if "error" in head:
            raise (Unavailable if head.get("unavailable") else WorkerError)(f"in the peer worker: {head['error']}")
        arr = None
        if "nbytes" in head:
            arr = np.load(io.BytesIO(self.proc.stdout.read(head["nbytes"])), allow_pickle=False)
        return head, arr

    def close(self) -> None:
        if self.stderr.closed:
            return
        if self.proc.poll() is None:
            try:
                self.call({"op": "close"})
            except (WorkerError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()


def _describe(hello: dict[str, Any]) -> str:
    v = hello.get("versions", {})
    keys = ("transformers", "optimum-onnx", "sentence-transformers", "onnxruntime", "openvino")
    return f"peer worker (python {hello.get('python')}: " + ", ".join(f"{k} {v[k]}" for k in keys if k in v) + ")"


def prepare_in_worker(spec: Any, work: Path, python: str | os.PathLike[str]) -> Any:
    """``systems.prepare`` run by a short-lived worker; returns the prepared spec."""
    from benchmarks.systems import SystemSpec

    w = Worker(python)
    try:
        head, _ = w.call({"op": "prepare", "spec": spec.to_json(), "work": str(work)})
    finally:
        w.close()
    return SystemSpec.from_json(head["spec"])


class WorkerSystem:
    """The adapter interface (``encode(texts, kind) -> ndarray``) over a worker that runs the real adapter."""

    def __init__(self, spec: Any, python: str | os.PathLike[str]):
        self.spec = spec
        self.worker = Worker(python)
        try:
            head, _ = self.worker.call({"op": "load", "spec": spec.to_json()})
        except BaseException:
            self.worker.close()
            raise
        self.batching, self.sorts_by_length, self.model_bytes = head["batching"], head["sorts_by_length"], head["model_bytes"]
        self.where = _describe(self.worker.hello)
        self.calls: list[tuple[float, float]] = []  # (round trip s, inside the worker s) per encode

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        t0 = time.perf_counter()
        head, arr = self.worker.call({"op": "encode", "texts": list(texts), "kind": kind})
        self.calls.append((time.perf_counter() - t0, float(head["seconds"])))
        return arr

    def close(self) -> None:
        self.worker.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
