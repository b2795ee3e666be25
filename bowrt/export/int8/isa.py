"""Which CPUs compute an int8 graph exactly, and the encoding that is exact on all.

What the kernels do (ONNX Runtime's MLAS, ``onnxruntime/core/mlas/lib``): a u8 x s8
GEMM on x86 without VNNI (the AVX2 kernel ``x86_64/QgemmU8X8KernelAvx2.S``, the
AVX-512BW kernel ``QgemmU8X8KernelAvx512Core.S``, the matrix-vector kernel
``QgemvU8S8KernelAvx2.S`` that a one-row batch runs, and Windows' SSE4.1 kernel)
multiplies with ``vpmaddubsw``: for every output column it takes the bytes of two
*adjacent input channels* k = 2i and 2i + 1 (A and B are packed four input channels to
a 32-bit lane, so a pair never straddles a block) and adds the two products into one
**int16 that saturates** before the int32 accumulation. With activations a in 0..255
(the zero point is taken out afterwards through row and column sums, so the raw bytes
are what is multiplied) a pair can saturate only when both weights have the same sign
and ``max(w_k, 0) + max(w_{k+1}, 0) > 128`` or ``min(w_k, 0) + min(w_{k+1}, 0) < -128``
(255 x 128 = 32640 <= 32767). VNNI (``vpdpbusd``), AMX (``tdpbusd``) and ARM64
(bytes widened to 16 bits, products accumulated in 32: ``umlal``, ``udot``) are exact
for any weights, and so is every u8 x u8 kernel: x86 widens both operands to int16 and
multiplies with ``vpmaddwd`` into int32 (``ComputeBlockU8U8Avx2``).

So an int8 graph whose weights break the bound (plain rounding breaks it in ~1 % of
MiniLM's weight pairs) ships with a twin (``bowrt/runtime/twin.py``, derived at load): every int8 weight w
stored as the uint8 w + 128 with a zero point of 128. That is *the same integer
arithmetic*, (a - z_a)(w + 128 - 128), so the two graphs give the same int32 sums and
the same vectors; the runtime picks the u8 x s8 graph where ONNX Runtime's kernel
accumulates in int32 (measured at load, ``runtime/host.py``) and the u8 x u8 twin
elsewhere.

Rejected, measured on MiniLM (mean pooling, probe set, AMX host): weights constrained
so that no pair can saturate (one graph for all hosts). Clipping the offending pairs
inside GPTQ cost 1.5-7x the output error of plain GPTQ; raising each column's scale
until its largest pair fits (scales up 1.10-1.31x, median per node) cost 1.05-1.25x,
and end to end min cosine 0.9957 against 0.9970: below the 0.997 target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bowrt.bundle import INT8_ISAS, INT32_ISAS
from bowrt.runtime import host, twin

PAIR_LIMIT = 128  # the largest same-sign |w_k| + |w_{k+1}| whose products cannot saturate an int16
# The integer GEMMs and where each takes its weight zero point: runtime/twin.py, which derives the twin.
INTEGER_GEMMS = tuple(op.decode() for op in twin.INTEGER_GEMMS)
B_ZERO_POINT = {op.decode(): slot for op, slot in twin.B_ZERO_POINT.items()}


def pair_violations(w_q: np.ndarray) -> int:
    """How many (pair, column) sums of int8 weights ``w_q`` [K, N] could saturate a
    non-VNNI kernel's int16, for some uint8 input."""
    w = np.asarray(w_q).astype(np.int32)
    k = w.shape[0] - w.shape[0] % 2  # an odd last channel is paired with the kernel's zero padding
    a, b = w[0:k:2], w[1:k:2]
    pos = np.maximum(a, 0) + np.maximum(b, 0)
    neg = np.minimum(a, 0) + np.minimum(b, 0)
    return int(np.count_nonzero((pos > PAIR_LIMIT) | (neg < -PAIR_LIMIT)))


def _int8_weights(model: Any) -> list[tuple[Any, Any]]:
    """(node, weight initializer) of every integer GEMM whose weights are int8 constants."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type in INTEGER_GEMMS and len(node.input) > 1 else None
        if w is not None and w.data_type == TensorProto.INT8:
            out.append((node, w))
    return out


def exact_isas(model: Any) -> tuple[list[str], int]:
    """The ISAs on which ``model``'s integer GEMMs are exact, and how many weight pairs
    could saturate (0: exact everywhere; u8 weights are exact everywhere)."""
    from onnx import numpy_helper

    bad = sum(pair_violations(numpy_helper.to_array(w)) for _, w in _int8_weights(model))
    return (list(INT32_ISAS) if bad else list(INT8_ISAS)), bad


def exact_graph(path: Path) -> Path:
    """The graph that computes ``path``'s integers exactly on this host: ``path`` itself,
    or, where ONNX Runtime's int8 kernel adds products in saturating int16 pairs and the
    weights can overflow them, its u8 x u8 twin (written beside it). Every figure the
    export measures comes from the exact integers, so a bundle does not depend on the
    host that exported it."""
    if host.int8_kernel_exact():  # the common case: no need to read the graph
        return path
    import onnx

    if exact_isas(onnx.load(str(path)))[1] == 0:
        return path
    out = path.with_name(path.stem + ".u8.onnx")
    with open(out, "wb") as f:  # from the file: its weights may be in a data file beside it
        twin.write_u8(path, f)
    return out
