"""The in-process recovery bench's history: the engine reads its customers' messages back,
the business events and the won deals both (the deals go apart from the forwards)."""

from __future__ import annotations

import time

from benchmarks.recovery import build
from streamproc.config import Settings


def test_the_history_builds_customers_with_their_deals() -> None:
    engine = build(Settings(_env_file=None), 300, time.time())
    assert len(engine.leads) == 300
    assert engine.customers, "no customer: the forwards were not read back"
    assert any(customer.deals for customer in engine.customers.values()), "no deal read back"
