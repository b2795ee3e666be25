"""bowrt's benchmarks, dev only (not in the wheel): two rooms.

- :mod:`benchmarks.harness`: the harness, one package with no import cycle.
  ``python -m benchmarks`` runs it (``make bench``; ``make demo`` runs its quick form);
  the systems it can run are one table, :mod:`benchmarks.harness.adapters`.
- :mod:`benchmarks.studies`: one-off scripts, each answering one question whose answer
  lives in a section of ``docs/``; they use the harness, never the other way round.

Run both from the checkout's root with the bench extra installed. Importing this package
imports nothing else.
"""
