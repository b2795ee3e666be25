"""The systems the runner asks for, read from the one table (:mod:`benchmarks.harness.adapters`).

Names, groups and precisions; whether a system can run here, in the peer environment's
worker, or not at all (and the one step that would bring it in); and ``prepare`` / ``load``,
which route a system to the worker when that is where it runs. Every adapter is built from
a :class:`~benchmarks.harness.spec.SystemSpec` (plain data, JSON-able), so the same system
can be rebuilt in a fresh process for cold-start and peak-RSS figures. ``prepare`` does the
one-time heavy work in the parent (ONNX exports, conversions); ``load`` only loads. A system
that cannot run raises :class:`Unavailable` with the reason, and the report shows it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.harness import peer_env
from benchmarks.harness.adapters import BOWRT, GROUPS, PEERS, Entry
from benchmarks.harness.peer_client import WORKER_ENV, WorkerSystem, prepare_in_worker
from benchmarks.harness.quiet import output_to
from benchmarks.harness.spec import SystemSpec, Unavailable, bowrt_variant, is_bowrt, version
from bowrt.errors import OptionError

NAMES = (*PEERS, *GROUPS)  # what --against accepts


def entry(name: str) -> Entry:
    if is_bowrt(name):
        return BOWRT
    if name not in PEERS:
        raise OptionError(f"unknown system {name!r}; valid: {', '.join(NAMES)}, bowrt-<variant>")
    return PEERS[name]


def precision(name: str) -> str:
    """fp32, bf16, fp16 or int8: a bowrt bundle's variant (``bowrt-int8``, ``bowrt-int8-2``), else the table's."""
    return bowrt_variant(name).split("-")[0] if is_bowrt(name) else entry(name).precision


def expand_against(names: list[str]) -> list[str]:
    """``--against`` items -> peer names (groups expanded); unknown names fail with the valid list."""
    out: list[str] = []
    for n in names:
        if n not in NAMES:
            raise OptionError(f"unknown system {n!r} for --against; valid: {', '.join(NAMES)}")
        out.extend(GROUPS.get(n, (n,)))
    return list(dict.fromkeys(out))


def local_reason(name: str) -> Unavailable | None:
    """Why ``name`` cannot run in this process, from cheap checks (installed packages, the entry's own
    check); None if it may."""
    e = entry(name)
    missing = [p for p in e.needs if version(p) is None]
    if missing:
        return Unavailable(f"not installed: {', '.join(missing)}", fix=f"pip install {' '.join(missing)}")
    if e.check is not None:
        try:
            e.check()
        except Unavailable as why:
            return why
    return None


def peer_python() -> Path | None:
    """The peer environment's python when it is built (and this is not already a worker), else None."""
    if os.environ.get(WORKER_ENV):
        return None
    venv = peer_env.env_dir()
    return peer_env.python_of(venv) if peer_env.ready_info(venv) is not None else None


def runs_in_worker(name: str) -> bool:
    """True when ``name`` cannot run here but the peer environment's worker can run it."""
    return not is_bowrt(name) and entry(name).peer_env and local_reason(name) is not None and peer_python() is not None


def unavailable(name: str) -> Unavailable | None:
    """Why ``name`` can run neither here nor in the peer environment's worker; None if it may run."""
    why = local_reason(name)
    if why is None or runs_in_worker(name):
        return None
    if entry(name).peer_env:  # the peer environment brings it, whatever it lacks here
        return Unavailable(f"{why}; it runs in the peer environment, which is not built", fix=peer_env.BUILD_COMMAND)
    return why


def prepare(spec: SystemSpec, work: Path) -> SystemSpec:
    """One-time files a system needs (parent process only); any failure becomes :class:`Unavailable`."""
    try:
        if runs_in_worker(spec.name):
            return prepare_in_worker(spec, work, peer_python())
        if (why := local_reason(spec.name)) is not None:
            raise why
        e = entry(spec.name)
        return e.prepare(spec, work) if e.prepare else spec
    except Unavailable:
        raise
    except Exception as e:
        raise Unavailable(f"failed to prepare its model files: {type(e).__name__}: {e}") from e


def load(spec: SystemSpec) -> Any:
    """Build the adapter for ``spec``; any failure to load becomes :class:`Unavailable`."""
    e = entry(spec.name)  # an unknown name is an OptionError, not an unavailable system
    try:
        if runs_in_worker(spec.name):
            return WorkerSystem(spec, peer_python())
        return e.load(spec)
    except Unavailable:
        raise
    except Exception as err:
        raise Unavailable(f"failed to load: {type(err).__name__}: {err}") from err


def bring_up(spec: SystemSpec, work: Path, third_party_log: Path | None = None) -> tuple[SystemSpec, Any]:
    """:func:`prepare`, then :func:`load`; what the libraries print meanwhile goes to ``third_party_log``."""
    with output_to(third_party_log, f"{spec.name}: prepare and load"):
        spec = prepare(spec, work)
        return spec, load(spec)
