"""The ONNX nodes of the int8 rewrite: per-token and static activation quantization, the
u8 x s8 GEMM, SmoothQuant's division and the attention key mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from bowrt.errors import UnsupportedGraphError


class GraphBuilder:
    """Collects new nodes and initializers while the graph is rewritten.

    Small operators cost ~10 µs each at batch 1, so what depends only on the batch
    shape (the [B, S, 1] zero points) is built once per graph and shared by every
    quantized MatMul.
    """

    def __init__(self, ids_input: str, mask_input: str | None = None) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.ids = ids_input
        self.mask = mask_input
        self._shared: dict[Any, str] = {}

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        domain = "com.microsoft" if op in ("MatMulIntegerToFloat", "QAttention") else ""
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def zero_points(self, zp: int) -> str:
        """A uint8 tensor [B, S, 1] of zero points, one per token row."""
        from onnx import numpy_helper

        if ("zp", zp) not in self._shared:
            if "rows" not in self._shared:
                batch_shape = self.node("Shape", [self.ids], "q8/shared/batch_shape")  # [B, S]
                self._shared["rows"] = self.node(
                    "Concat", [batch_shape, self.const("q8/shared/one", np.array([1], np.int64))], "q8/shared/rows", axis=0
                )
            self._shared[("zp", zp)] = self.node(
                "ConstantOfShape", [self._shared["rows"]], f"q8/shared/zp{zp}",
                value=numpy_helper.from_array(np.array([zp], np.uint8)),
            )
        return self._shared[("zp", zp)]

    def quantize_rows(self, p: str, x: str, k: int, unsigned: bool) -> tuple[str, str, int]:
        """``x`` ([B, S, K]) quantized to uint8 with one scale per token row, taken from the row
        itself: (quantized tensor, [B, S, 1] scales, zero point).

        QuantizeLinear quantizes in blocks of one whole row (opset 21 ``block_size``), so
        nothing is reshaped: at batch 1 every small operator costs several µs."""
        # Signed inputs: symmetric, zero point 128 (u8). Unsigned: 0..255, zero point 0.
        zp, levels = (0, 255) if unsigned else (128, 127)
        peak = x if unsigned else self.node("Abs", [x], f"{p}/abs")
        amax = self.node("ReduceMax", [peak, self.const(f"{p}/last_axis", np.array([-1], np.int64))], f"{p}/amax", keepdims=1)
        # An all-zero row gets scale 0: whatever integers QuantizeLinear makes of 0/0, the
        # GEMM's result is multiplied by that 0, so the row's output is 0, as it should be.
        scale = self.node("Mul", [amax, self.const(f"{p}/inv_levels", np.float32(1 / levels))], f"{p}/scale")
        q = self.node("QuantizeLinear", [x, scale, self.zero_points(zp)], f"{p}/q", axis=2, block_size=k)
        return q, scale, zp

    def quantize_static(self, p: str, x: str, smooth: np.ndarray | None, a: float) -> tuple[str, str, int]:
        """``x / smooth`` (per input channel; None: ``x`` arrives smoothed) quantized to uint8
        with one calibrated scale ``a``: (quantized tensor, scale, zero point).

        Per-tensor QuantizeLinear runs ONNX Runtime's vectorized kernel and the GEMM's float
        epilogue does all the scaling. (A per-axis QuantizeLinear would take the smoothing
        in its scales, but ONNX Runtime runs that form ~100x slower than Mul + per-tensor.)"""
        if smooth is not None:
            x = self.divide(p, x, smooth)
        scale = self.const(f"{p}/x_scale", np.float32(a))
        # (q - 128) * a = x_j / smooth_j: the smoothed input the (row-scaled) weights expect.
        return self.node("QuantizeLinear", [x, scale, self.const(f"{p}/x_zp", np.uint8(128))], f"{p}/q"), scale, 128

    def int8_matmul(self, p: str, q: tuple[str, str, int], w_q: np.ndarray, w_scale: np.ndarray, out: str,
                    bias: np.ndarray | None = None) -> str:
        """``out = (q - zp) * scale @ (w_q * w_scale) [+ bias]``: int8 weights with one scale per
        output channel, u8 x s8 (the AVX-512 VNNI form), GEMM and float epilogue in one kernel.
        Row scales ([B, S, 1]) ride in as the A scale, broadcast by the kernel. (A separate Mul
        after the GEMM measured no faster on the corpus and slower at batch 1.)

        ``bias`` only with a scalar (static) A scale: ONNX Runtime 1.32 adds the bias in the
        epilogue *before* it applies a non-scalar A scale, so a per-token node keeps its bias
        outside (docs/int8.md, Rejected variants); with a scalar scale the epilogue is exact."""
        x_q, scale, zp = q
        inputs = [x_q, self.const(f"{p}/w_q", w_q), scale, self.const(f"{p}/w_scale", w_scale),
                  self.const(f"{p}/a_zp", np.uint8(zp))]
        if bias is not None:
            inputs += ["", self.const(f"{p}/bias", np.asarray(bias, np.float32))]  # no B zero point; bias is input 6
        return self.node("MatMulIntegerToFloat", inputs, out)

    def per_token_matmul(self, p: str, x: str, w_q: np.ndarray, w_scale: np.ndarray, *, unsigned: bool, out: str) -> str:
        """Nodes for ``out = x @ (w_q * w_scale)``, activations ([B, S, K]) quantized with one
        scale per token row: 5-7 operators per MatMul (instead of 9-11 with reshapes)."""
        return self.int8_matmul(p, self.quantize_rows(p, x, w_q.shape[0], unsigned), w_q, w_scale, out)

    def divide(self, p: str, x: str, s: np.ndarray) -> str:
        """``x / s`` per input channel (SmoothQuant), or ``x`` itself when s is all ones."""
        if np.all(s == 1):
            return x
        return self.node("Mul", [x, self.const(f"{p}/inv_smooth", (1 / s).astype(np.float32))], f"{p}/x_smooth")

    def static_matmul(
        self, p: str, x: str, w_q: np.ndarray, w_scale: np.ndarray, *, smooth: np.ndarray | None, a: float, out: str,
        bias: np.ndarray | None = None,
    ) -> str:
        """Nodes for ``out = x @ (w_q * w_scale) [+ bias]`` with activations quantized by one
        calibrated scale ``a`` for ``x / smooth`` (:meth:`quantize_static`)."""
        return self.int8_matmul(p, self.quantize_static(p, x, smooth, a), w_q, w_scale, out, bias=bias)

    def raw_mask(self) -> str:
        """The attention mask as int32 [B, S] (1: a real token), the raw form ONNX Runtime's
        contrib attention kernels (``QAttention``) take. Built once per graph."""
        if "mask_i32" not in self._shared:
            if self.mask is None:
                raise UnsupportedGraphError("the graph has no attention_mask input to build the attention mask from")
            from onnx import TensorProto

            self._shared["mask_i32"] = self.node("Cast", [self.mask], "q8/shared/mask_i32", to=TensorProto.INT32)
        return self._shared["mask_i32"]

    def key_mask(self) -> str:
        """A bool [B, 1, S, S] tensor, True where a query may attend to a key (the key is not
        padding): the ``attn_mask`` form ONNX Attention takes. Built once per graph."""
        if "mask4" not in self._shared:
            if self.mask is None:
                raise UnsupportedGraphError("the graph has no attention_mask input to build the attention mask from")
            from onnx import TensorProto

            keys = self.node("Cast", [self.mask], "q8/shared/mask_bool", to=TensorProto.BOOL)
            keys = self.node("Unsqueeze", [keys, self.const("q8/shared/axes12", np.array([1, 2], np.int64))], "q8/shared/mask_b11s")
            shape = self.node("Shape", [self.mask], "q8/shared/mask_shape")  # [B, S]
            rows = self.node("Concat", [
                self.node("Slice", [shape, self.const("q8/shared/at0", np.array([0], np.int64)),
                                    self.const("q8/shared/at1", np.array([1], np.int64))], "q8/shared/mask_b"),
                self.const("q8/shared/dim1", np.array([1], np.int64)),
                self.node("Slice", [shape, "q8/shared/at1", self.const("q8/shared/at2", np.array([2], np.int64))], "q8/shared/mask_s"),
                "q8/shared/dim1",
            ], "q8/shared/mask_rows", axis=0)  # [B, 1, S, 1]
            self._shared["mask4"] = self.node("Expand", [keys, rows], "q8/shared/mask4")
        return self._shared["mask4"]
