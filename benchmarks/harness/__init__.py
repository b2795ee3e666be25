"""The benchmark harness: bowrt against PyTorch and peer tools, in one run, on this machine.

Entry points: ``python -m benchmarks`` (:mod:`.cli`), ``make demo`` (:mod:`.demo`),
``python -m benchmarks.harness.peer_env build`` (:mod:`.peer_env`). Importing the harness
imports no torch: heavy libraries load inside the adapters that use them.

The modules, from the bottom up (each imports only those above it in this list):

- ``spec`` (a system as plain data, ``Unavailable``), ``config`` (``BenchConfig``, constants),
  ``quiet`` (third-party output off the terminal), ``usage`` (CPU share, peak RSS);
- ``models`` (twin, MiniLM, cached bundles), ``workloads`` (texts and timed calls),
  ``machine`` (description, GEMM ceilings, FLOP counts);
- ``adapters/`` (one module a system, and the one table of them in its ``__init__``),
  ``peer_env`` (the peers' own venv), ``peer_client`` (the bench's side of a peer worker);
- ``systems`` (reads the table: availability, routing to the worker, ``prepare``/``load``),
  ``peer_worker`` (the worker process), ``coldstart`` (one fresh process per system);
- ``resolve`` (model, bundles, specs), ``budget`` (duration estimate, ``--quick``'s cut),
  ``rounds`` (warm-up and interleaved rounds), ``gather`` (medians per workload),
  ``accuracy`` (against PyTorch on real weights), ``frontier`` (speed against accuracy plots),
  ``report``/``plots``/``summary`` (results.json, results.md, PNGs, the terminal's summary);
- ``runner`` (the run), ``cli`` (its command line), ``demo`` (``make demo``).

``tests/test_shape.py`` checks that no import cycle exists here or in ``bowrt/``.
"""
