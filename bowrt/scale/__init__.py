"""Hand-offs to existing serving and batch engines (the ``scale`` extra).

- :mod:`bowrt.scale.triton`: a bundle -> a Triton Inference Server model repository
  (onnxruntime backend, dynamic batching, TensorRT on GPU);
- :mod:`bowrt.scale.ray_encode`: the corpus job of :mod:`bowrt.corpus` on a Ray cluster.

Nothing is imported here, so ``import bowrt.scale`` needs neither tritonclient nor ray.
"""
