"""Facts written by hand, as the deriver makes them."""

from __future__ import annotations

from streamproc.engine.facts import Fact


def fact(family: str, labels: tuple[str, ...], t: float | None, value: float) -> Fact:
    return (family, labels, t, value)
