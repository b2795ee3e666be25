"""The numerics self-check: does this host compute the bundle's vectors?

The export writes ``numerics.npz`` into every bundle: for a few probe texts (listed in
``manifest.parity.numerics``), their PyTorch fp32 vectors and the graph's own vectors
on the export host. Here the same texts go through the Encoder on this host, and

- against PyTorch, the worst cosine must meet the variant's gate (``min_cosine``);
- against the export host, the worst cosine must be ``host_min_cosine`` (int8 0.999,
  fp32 0.99999: the same vectors to float rounding, and for int8 the activation
  roundings it flips; export/parity.py, HOST_AGREEMENT, has the measurements) when the session runs
  on CPU, as the export did.

A miss raises :class:`NumericsError` naming this host's ISA and the figures. The
Encoder runs it at load by default (``check_numerics``); ``bowrt verify --numerics``
runs it on demand.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bowrt.bundle import NUMERICS_FILE
from bowrt.errors import BundleFormatError, NumericsError
from bowrt.runtime import host


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def run(encoder: Any) -> dict[str, Any]:
    """Encode the bundle's self-check texts on this host and compare; returns the figures
    (``checked: False`` for a bundle exported before bowrt carried them)."""
    spec = (encoder.manifest.parity or {}).get("numerics")
    if not spec:
        return {"checked": False, "reason": "the bundle carries no reference vectors (exported by bowrt < 0.2)"}
    t0 = time.perf_counter()
    try:
        with np.load(encoder.bundle_dir / spec["file"], allow_pickle=False) as ref:
            pytorch, bundle = ref["pytorch"], ref["bundle"]
        queries = [str(q) for q in spec["queries"]]
        passages = [(str(t), str(x)) for t, x in spec["passages"]]
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise BundleFormatError(f"the bundle's self-check data ({NUMERICS_FILE}) is unreadable: {e}") from e
    got = np.concatenate([encoder.encode_queries(queries, normalize=False),
                          encoder.encode_passages(passages, normalize=False)])
    if got.shape != pytorch.shape or got.shape != bundle.shape:
        raise BundleFormatError(f"the self-check vectors have shape {pytorch.shape}; this host produced {got.shape}")
    on_cpu = encoder.provider == "cpu"
    out = {
        "checked": True,
        "texts": len(got),
        "min_cosine_vs_pytorch": float(_cosines(got, pytorch).min()),
        "gate": float(spec.get("min_cosine", 0.0)),
        # The export ran on CPU; a GPU's float kernels are compared with PyTorch only.
        "min_cosine_vs_export_host": float(_cosines(got, bundle).min()) if on_cpu else None,
        "host_gate": float(spec.get("host_min_cosine", 0.0)) if on_cpu else None,
        "finite": bool(np.isfinite(got).all()),
        "seconds": time.perf_counter() - t0,
    }
    failures = []
    if not out["finite"]:
        failures.append("NaN or inf in the vectors")
    if out["min_cosine_vs_pytorch"] < out["gate"]:
        failures.append(f"min cosine to PyTorch fp32 {out['min_cosine_vs_pytorch']:.6f} < gate {out['gate']}")
    if on_cpu and out["min_cosine_vs_export_host"] < out["host_gate"]:
        failures.append(f"min cosine to the export host's vectors {out['min_cosine_vs_export_host']:.6f} "
                        f"< {out['host_gate']}")
    if failures:
        info = host.describe()
        raise NumericsError(
            f"the {encoder.variant} bundle {str(encoder.bundle_dir)!r} does not compute its vectors on this host "
            f"(int8 ISA {info['int8_isa']}, int8 accumulation {info['int8_accumulation']}, provider "
            f"{encoder.provider}): {'; '.join(failures)}. The export host was "
            f"{((encoder.manifest.parity or {}).get('host') or {}).get('int8_isa', 'not recorded')}. "
            "Re-export the bundle on this host, or use its fp32 bundle."
        )
    return out
