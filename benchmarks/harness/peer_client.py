"""The bench's side of a peer worker: start it, talk to it, and an adapter that proxies ``encode`` to it.

The worker itself is :mod:`benchmarks.harness.peer_worker` (its docstring has the
protocol). :class:`WorkerSystem` keeps (round trip, inside the worker) per call in
``calls``; the runner reports the time inside the worker as the figure (what the peer
costs a user who runs it in their own process) and the round trip next to it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.spec import SystemSpec, Unavailable

WORKER_ENV = "BOWRT_PEER_WORKER"  # set in a worker: its systems run in-process, never in a further worker
ROOT = Path(__file__).resolve().parents[2]  # the checkout: where the ``benchmarks`` package lives


def child_env() -> dict[str, str]:
    """The environment with the checkout's root on PYTHONPATH: a child process imports ``benchmarks``."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class WorkerError(RuntimeError):
    """The worker failed a request (not an availability problem), or died."""


class Worker:
    """One worker process; :meth:`call` sends a request and returns (reply head, array or None)."""

    def __init__(self, python: str | os.PathLike[str]):
        self.stderr = tempfile.TemporaryFile()  # the worker's log, quoted when it fails
        env = child_env()
        env[WORKER_ENV] = "1"
        self.proc = subprocess.Popen([str(python), "-m", "benchmarks.harness.peer_worker"], stdin=subprocess.PIPE,
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
            if head.get("unavailable"):
                raise Unavailable(f"in the peer worker: {head['error']}", fix=head.get("fix"))
            raise WorkerError(f"in the peer worker: {head['error']}")
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


def prepare_in_worker(spec: SystemSpec, work: Path, python: str | os.PathLike[str]) -> SystemSpec:
    """``systems.prepare`` run by a short-lived worker; returns the prepared spec."""
    w = Worker(python)
    try:
        head, _ = w.call({"op": "prepare", "spec": spec.to_json(), "work": str(work)})
    finally:
        w.close()
    return SystemSpec.from_json(head["spec"])


class WorkerSystem:
    """The adapter interface (``encode(texts, kind) -> ndarray``) over a worker that runs the real adapter."""

    def __init__(self, spec: SystemSpec, python: str | os.PathLike[str]):
        self.spec = spec
        self.worker = Worker(python)
        try:
            head, _ = self.worker.call({"op": "load", "spec": spec.to_json()})
        except BaseException:
            self.worker.close()
            raise
        self.batching, self.sorts_by_length, self.model_bytes = head["batching"], head["sorts_by_length"], head["model_bytes"]
        if head.get("batches"):  # the adapter in the worker says how it batches (see benchmarks.harness.adapters)
            self.batches = self._batches
        self.where = _describe(self.worker.hello)
        self.calls: list[tuple[float, float]] = []  # (round trip s, inside the worker s) per encode

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        t0 = time.perf_counter()
        head, arr = self.worker.call({"op": "encode", "texts": list(texts), "kind": kind})
        self.calls.append((time.perf_counter() - t0, float(head["seconds"])))
        return arr

    def _batches(self, texts: list[str], kind: str) -> list[list[int]]:
        head, _ = self.worker.call({"op": "batches", "texts": list(texts), "kind": kind})
        return head["groups"]

    def close(self) -> None:
        self.worker.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
