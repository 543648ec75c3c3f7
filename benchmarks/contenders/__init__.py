"""The baselines the KPI worker is measured against, each a standalone process.

``raw_consumer`` (a raw aiokafka loop: the stack's limit), ``plain_faust`` (a Faust agent
doing nothing: Faust's per-event ceiling) and ``naive_faust`` (a tutorial-style Faust app:
a changelogged table ``+= 1`` per event). The bench starts each as
``python -m benchmarks.contenders.NAME`` and reads its status file (``common.Status``).
They import nothing from ``streamproc``: they are what it is compared with.
"""
