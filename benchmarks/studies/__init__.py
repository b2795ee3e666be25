"""One-off studies: each script answers one question, and its docstring names the docs section that holds the answer.

Run one from the checkout's root, ``python benchmarks/studies/NAME.py`` (or
``python -m benchmarks.studies.NAME``); ``--help`` lists its options. They use the harness
(:mod:`benchmarks.harness`) and :mod:`.common`, what several of them share; nothing in the
harness or in ``bowrt/`` imports them.

| study | question |
|---|---|
| batch_lanes | do a call's batches run faster side by side, one thread each, with the same bits? |
| batcher_wait | how long should the dynamic batcher hold a batch open? |
| budget_sweep | which batch token budget should the CPU default be? |
| core_latency | do bowrt int8's two speeds follow the host's core-to-core latency? |
| gpu_check | do the CUDA and TensorRT paths match CPU fp32, and how fast are they? |
| int8_agreement | do the int8 systems keep the ranking on texts none was tuned on? |
| int8_bound | how near can int8 get to PyTorch bf16 on uniform batches? |
| int8_compare | bowrt int8 against ONNX Runtime's dynamic int8: speed, invariance, agreement |
| int8_host | what does the portable int8 (self-check, u8 twin) cost? |
| int8_paired | the same speed comparison, paired call by call against this VM's drift |
| int8_profile | where do the int8 graphs spend a corpus (ORT's profiler)? |
| int8_profiles | what does each int8 profile (any int8 bundles) cost per operator, and how fast is each, paired? |
| int8_two_speeds | does an int8 graph run at one speed pass after pass, and which operators change? |
| layernorm_check | why do the CPU bundles ship their layer norms split? |
| openvino_gap | why is openvino-int8 faster on a corpus, and would OpenVINO close it? |
| revisions_paired | is a refactor of the runtime free (two checkouts, paired)? |
| bench_paired | is a change to the harness free (the bench itself, two checkouts, paired)? |
| serve_defaults | do ``bowrt serve``'s defaults hold up on a CPU host? |
| test_hotpaths | where does a call spend its time outside the model (pytest-benchmark)? |
"""
