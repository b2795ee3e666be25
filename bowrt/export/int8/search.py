"""The int8 variant's search: start from the simulation's per-node choices, measure on
the calibration texts, and move the nodes that hurt the output most one tier up
(static -> per-token -> fp32) until the search target is met."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bowrt.errors import Int8SettingsError
from bowrt.export import optimize, parity, probes
from bowrt.export.int8.calibrate import CalibrationStats, Target, activation_stats, find_targets
from bowrt.export.int8.choose import STATIC_TOLERANCE, choose_plan
from bowrt.export.int8.embeddings import EMBEDDINGS
from bowrt.export.int8.isa import exact_graph
from bowrt.export.int8.rewrite import quantize_smooth

METHODS = ("smoothquant", "dynamic")
# What each profile starts from and aims for. "default": static nodes only where the
# simulation says they cost nothing, and the search target parity.INT8_SEARCH_TARGET.
# "speed": every node static (one calibrated scale, bias in the GEMM's epilogue: the
# fewest passes stock ONNX Runtime can run), moved to per-token or fp32 by the search only
# until the calibration texts meet parity.INT8_SPEED_TARGET.
PROFILES = ("default", "speed")
Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class Int8Settings:
    """How the int8 variant is built (``bowrt export --int8-method``, ``--int8-profile``,
    ``--int8-static-tolerance``, ``--int8-embeddings``).

    ``profile``: "default" or "speed" (:data:`PROFILES`). ``static_tolerance``: a smoothquant
    node gets one calibrated activation scale (faster) instead of per-token scales when its
    simulated error is at most this many times the per-token one; None takes the profile's
    (default 1.0, only where that costs no accuracy; speed: every node)."""

    method: str = "smoothquant"
    profile: str = "default"
    static_tolerance: float | None = None
    # The word-embedding table: int8 with one scale per row (a quarter of the fp32 bytes), or fp32.
    embeddings: str = "int8"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise Int8SettingsError(f"unknown int8 method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.profile not in PROFILES:
            raise Int8SettingsError(f"unknown int8 profile {self.profile!r}; valid: {', '.join(PROFILES)}")
        if self.profile != "default" and self.method != "smoothquant":
            raise Int8SettingsError(f"int8 profile {self.profile!r} is a smoothquant profile; it does not apply to "
                                    f"method {self.method!r}")
        if self.embeddings not in EMBEDDINGS:
            raise Int8SettingsError(f"unknown int8 embeddings {self.embeddings!r}; valid: {', '.join(EMBEDDINGS)}")
        if self.static_tolerance is None:
            object.__setattr__(self, "static_tolerance", math.inf if self.profile == "speed" else STATIC_TOLERANCE)
        tolerance = self.static_tolerance
        if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
            raise Int8SettingsError(f"int8 static tolerance must be a number >= 0, got {tolerance!r}")
        object.__setattr__(self, "static_tolerance", float(tolerance))


@dataclass(frozen=True, kw_only=True)
class CalibrationSet:
    """The calibration texts (never the probes) as the search measures on them: their
    token ids and PyTorch's fp32 vectors for them."""

    texts: probes.TextSet
    q_ids: list[list[int]]
    p_ids: list[list[int]]
    ref_q: np.ndarray
    ref_p: np.ndarray


def best_step(tried: list[dict[str, Any]], target: dict[str, float]) -> int:
    """Index of the search step to ship: the first that meets ``target``; if none does,
    the one meeting most of its metrics, then with the highest mean cosine, then min
    cosine (ties: the earliest, which keeps fewer nodes out of int8).

    Mean cosine, not overlap@10, breaks the tie: on the 96 calibration texts overlap@10
    moves by 0.006 between graphs whose cosines agree to 7 digits (float rounding flips
    near-tied ranks), so picking by it picks noise; the mean cosine moves with fidelity."""
    met = [sum(1 for k, v in target.items() if tried[i].get(k, -math.inf) >= v) for i in range(len(tried))]
    if len(target) in met:
        return met.index(len(target))
    return max(range(len(tried)), key=lambda i: (met[i], tried[i]["mean_cosine"], tried[i]["min_cosine"], -i))


class _Search:
    """Builds and measures the search's graphs, all at ``path``, from one calibration and
    one set of rounded weights; ``modes`` is the current plan, changed as nodes move."""

    def __init__(self, fused: Path, path: Path, *, cal: CalibrationSet, stats: CalibrationStats,
                 alphas: dict[str, float | None], modes: dict[str, str], targets: list[Target], log: Log) -> None:
        self.fused, self.path, self.cal, self.stats = fused, path, cal, stats
        self.alphas, self.modes, self.targets, self.log = alphas, modes, targets, log
        self.cache: dict[Any, Any] = {}  # rounded weights, shared by every graph built

    def build(self, keep: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
        info = quantize_smooth(self.fused, self.path, self.stats, alpha=self.alphas, modes=self.modes,
                               keep_fp32=frozenset(keep), cache=self.cache)
        optimize.split_skip_layer_norms(self.path, self.path)  # measure the graph that ships
        run = probes.ort_runner(str(exact_graph(self.path)))
        cal = self.cal
        return info, parity.compare(cal.ref_q, cal.ref_p, probes.encode_ids(run, cal.q_ids), probes.encode_ids(run, cal.p_ids))

    def step(self, keep: list[str], got: dict[str, float], moved: tuple[str, str] | None = None) -> dict[str, Any]:
        static = sum(1 for t in self.targets if t.name not in keep and self.modes[t.name] == "static")
        self.log(f"  int8 with {static} static, {len(self.targets) - static - len(keep)} per-token, {len(keep)} fp32 node(s), "
                 f"on the calibration texts: min cos {got['min_cosine']:.5f}, overlap@10 {got['overlap_at_10']:.3f}")
        row = {"fp32_nodes": len(keep), "static_nodes": static, "min_cosine": got["min_cosine"],
               "mean_cosine": got["mean_cosine"], "overlap_at_10": got["overlap_at_10"]}
        return {**row, "node": moved[0], "to": moved[1]} if moved else row

    def sensitivity(self) -> list[dict[str, Any]]:
        """Each node's end-to-end effect: the output error left when that node alone stays
        fp32, least error left (most effective) first."""
        self.log(f"  measuring each node's effect on the output ({len(self.targets)} graphs) ...")
        t0 = time.perf_counter()
        left = {}
        for i, t in enumerate(self.targets, 1):
            left[t.name] = 1.0 - self.build([t.name])[1]["mean_cosine"]
            if i % 8 == 0 or i == len(self.targets):
                self.log(f"    {i}/{len(self.targets)} nodes, {time.perf_counter() - t0:.0f} s")
        order = sorted(left, key=lambda n: left[n])
        return [{"node": n, "error_left_if_fp32": left[n]} for n in order]


def search_target(gates: dict[str, float], profile: str = "default") -> dict[str, float]:
    """What the search aims for on the calibration texts: the profile's target
    (parity.INT8_SEARCH_TARGET, or INT8_SPEED_TARGET for "speed"), raised to the variant's
    gates. A gate set to 0 (e.g. ranking agreement on random weights) is not searched for either."""
    base = parity.INT8_SPEED_TARGET if profile == "speed" else parity.INT8_SEARCH_TARGET
    return {k: max(v, gates.get(k, 0.0)) for k, v in base.items() if gates.get(k, 1.0) > 0}


def search_int8(
    fused: Path, path: Path, *, calibration: CalibrationSet, gates: dict[str, float], settings: Int8Settings, log: Log,
) -> dict[str, Any]:
    """Build the smoothquant int8 graph at ``path``; returns the manifest's quantization
    section. Each node starts in the activation mode the simulation picks (static where
    nearly as accurate as per-token: the fastest form). If the calibration texts then miss
    the search target, measure each node's end-to-end effect and, most effective first,
    move nodes one tier up (static -> per-token -> fp32), one at a time, until the target,
    the fp32 cap or the step cap is reached."""
    import onnx

    cal = calibration
    batches = [(ids, mask) for _, ids, mask in probes.padded_batches(cal.q_ids + cal.p_ids, 16)]
    model = onnx.load(str(fused))
    targets = find_targets(model)
    log(f"  calibrating on {len(cal.q_ids) + len(cal.p_ids)} texts ...")
    stats = activation_stats(fused, targets, batches)
    alphas, modes = choose_plan(model, stats, tolerance=settings.static_tolerance)
    target = search_target(gates, settings.profile)
    max_fp32 = max(1, round(len(targets) * parity.INT8_MAX_FP32_FRACTION))
    s = _Search(fused, path, cal=cal, stats=stats, alphas=alphas, modes=modes, targets=targets, log=log)

    log(f"  rounding the weights of {len(targets)} nodes (GPTQ) ...")
    keep: list[str] = []
    info, got = s.build(keep)
    tried = [s.step(keep, got)]
    sensitivity: list[dict[str, Any]] = []
    plans = [(list(keep), dict(modes))]  # what each step built, to rebuild the best one
    if not parity.check_gates(got, target).passed:
        sensitivity = s.sensitivity()
        info = _move_nodes(s, [row["node"] for row in sensitivity], keep, max_fp32=max_fp32, target=target,
                           tried=tried, plans=plans) or info
    chosen = best_step(tried, target)
    if chosen != len(tried) - 1:
        # Target missed: ship the most faithful step, not merely the last one.
        keep, chosen_modes = plans[chosen]
        modes.clear()
        modes.update(chosen_modes)
        log(f"  target missed; shipping search step {chosen} (the best on the calibration texts)")
        info, _ = s.build(keep)
    info["profile"] = settings.profile
    info["calibration"] = {
        **cal.texts.describe(), "tokens": stats.tokens, "search_target": target, "max_fp32_nodes": max_fp32,
        "static_tolerance": settings.static_tolerance if math.isfinite(settings.static_tolerance) else "inf",  # strict JSON
        "search": tried,
        "chosen_step": chosen,  # index into search: the step that ships
        # 1 - mean cosine to PyTorch on the calibration texts with only that node in fp32
        # (every other quantized), lowest first; empty when no search was needed.
        "sensitivity": sensitivity,
        "error_all_quantized": 1.0 - tried[0]["mean_cosine"],
    }
    return info


def _move_nodes(
    s: _Search, order: list[str], keep: list[str], *, max_fp32: int, target: dict[str, float],
    tried: list[dict[str, Any]], plans: list[tuple[list[str], dict[str, str]]],
) -> dict[str, Any] | None:
    """Move nodes one tier up in ``order`` (static -> per-token, else into ``keep``, the fp32
    nodes, up to ``max_fp32``), one graph per move, until one meets ``target``; appends each
    step to ``tried`` and ``plans``. Returns the last graph's quantization section (None if
    no node moved)."""
    info = None
    for name in order[: 2 * max_fp32]:
        if s.modes[name] == "static":
            s.modes[name] = "token"
        elif len(keep) < max_fp32:
            keep.append(name)
        else:
            continue
        info, got = s.build(keep)
        tried.append(s.step(keep, got, (name, "fp32" if name in keep else "token")))
        plans.append((list(keep), dict(s.modes)))
        if parity.check_gates(got, target).passed:
            break
    return info
