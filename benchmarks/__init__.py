"""The benchmark: throughput, latency, alert delay and memory of the worker, measured.

Run from a source checkout as ``python -m benchmarks [--quick]`` (``--help`` lists the
options); it is not part of the installed package. One run starts an embedded broker,
pre-produces a realistic history from the simulator, and lets each contender read it from
the start of the topics, one after the other, on the same data: the raw aiokafka loop (the
stack's limit), a Faust agent doing nothing (Faust's per-event ceiling), a naive Faust app
(a table ``+= 1`` per event), then the KPI topology with two workers and with one. The
one-worker run then carries a steady load for the latency and alert measurements, and its
peak RSS is read from ``/proc``.

Modules: ``options`` (what a run does, the goals), ``processes`` (worker subprocesses, CPU
and memory from /proc, the code measured), ``metrics`` (figures read from /metrics,
quantiles), ``session`` (one run's broker, settings and work directory), ``throughput``,
``latency`` (and the alert delay), ``profiling`` (py-spy), ``report`` (the figures, the
goals, the table), ``run`` (the whole bench, the backfill bench) and ``contenders`` (the
baselines, standalone processes that import nothing from ``streamproc``).

How each figure is taken is written next to the code that takes it and in
``docs/performance.md``.
"""
