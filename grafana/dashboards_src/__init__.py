"""Grafana dashboards as code: one module per dashboard, each with a ``build()``."""

from . import manager, operations, wallboard

__all__ = ["manager", "operations", "wallboard"]
