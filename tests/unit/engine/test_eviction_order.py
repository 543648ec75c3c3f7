"""A lead's events on different topics are read at different speeds in a backfill: its
lead-created may come after the rest of its life. Forgetting the lead in between must not
lose its source (a won deal under source="unknown" in the month windows) nor leave a
phantom lead waiting for its first contact."""

from __future__ import annotations

import orjson

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.engine.engine import Engine, RawMessage
from streamproc.tools.sales_team import rfc3339
from tests.support.truth import engine_samples

DAY = 86400.0
NOW = 1_780_000_000.0  # 2026-05-28, a Thursday: 20 days ago is in the same month
SETTINGS = Settings(_env_file=None)


def _message(kind: str, offset: int, ago_days: float, **fields: object) -> RawMessage:
    event = {
        "event_id": f"e{offset}",
        "occurred_at": rfc3339(NOW - ago_days * DAY),
        "lead_id": "old-lead",
        "rep_id": "rep-1",
        **fields,
    }
    return RawMessage(
        EventKind(kind), f"sales.{kind}", 0, offset, b"old-lead", orjson.dumps(event), None
    )


def _won_samples(engine: Engine, now: float = NOW) -> dict[str, float]:
    return {
        s.labels["source"]: s.value
        for s in engine_samples(engine, now)
        if s.metric == "sales_deals_won" and s.window is not None and s.window.name == "month"
    }


LIFE = [  # an old life without its lead-created: contacted, then won 19 days ago
    ("contact-attempted", 20.0, {"channel": "call", "connected": True}),
    ("stage-changed", 20.0, {"from_stage": None, "to_stage": "new"}),
    ("stage-changed", 19.0, {"from_stage": "new", "to_stage": "won", "deal_value": 5000}),
    ("contact-attempted", 19.0, {"channel": "sms", "connected": True}),
]


def _life() -> list[RawMessage]:
    return [_message(kind, i, ago, **fields) for i, (kind, ago, fields) in enumerate(LIFE)]


def test_a_lead_created_read_after_the_rest_of_an_old_life_still_gives_its_source() -> None:
    engine = Engine(SETTINGS, {})
    # stage-changed and contact-attempted are read first; lead-created lags behind (not read)
    engine.process(_life(), NOW)
    assert engine.evict(NOW) == []  # 19-20 days old, past retention, but its source may come
    engine.process([_message("lead-created", 4, 20.01, source="referral")], NOW)
    engine.evict(NOW)
    assert _won_samples(engine) == {"referral": 1.0}
    waiting = [s for s in engine_samples(engine, NOW) if s.metric == "sales_leads_awaiting_contact"]
    assert sum(s.value for s in waiting) == 0, "a lead long since contacted is not waiting"


def test_a_lead_is_kept_while_its_partitions_lead_created_topic_is_behind() -> None:
    engine = Engine(SETTINGS, {})
    # another lead's creation, 25 days ago, is as far as the lead-created topic was read
    other = _message("lead-created", 9, 25.0, source="webinar")
    other = other._replace(key=b"other", value=other.value.replace(b"old-lead", b"other"))
    engine.process([other, *_life()], NOW)
    assert engine.evict(NOW) == []
    newer = _message("lead-created", 10, 18.0, source="webinar")
    newer = newer._replace(key=b"newer", value=newer.value.replace(b"old-lead", b"newer"))
    engine.process([_message("lead-created", 4, 20.01, source="referral"), newer], NOW)
    assert _won_samples(engine) == {"referral": 1.0}
    # read past its last event on every topic (email-opened delivered nothing for a minute:
    # idle, not behind): forgotten, while the other leads still wait
    later = NOW + SETTINGS.prune_interval_seconds
    assert [lead.lead_id for lead in engine.evict(later)] == ["old-lead"]
    assert _won_samples(engine, later) == {"referral": 1.0}, "and its deal stays in the month"


def test_a_lead_that_never_gets_its_creation_goes_once_stale() -> None:
    engine = Engine(SETTINGS, {})
    engine.process(_life(), NOW)
    later = NOW + SETTINGS.open_lead_retention_days * DAY
    assert [lead.lead_id for lead in engine.evict(later)] == ["old-lead"]


def test_after_a_restart_with_nothing_to_read_old_leads_go_at_once() -> None:
    before = Engine(SETTINGS, {})
    before.process(_life(), NOW)
    recovered = Engine(SETTINGS, dict(before.leads))  # its leads, from the changelog
    assert [lead.lead_id for lead in recovered.evict(NOW)] == ["old-lead"]


def test_an_open_deal_of_a_replayed_year_is_kept_until_the_read_passes_its_retention() -> None:
    """Replaying a year, a deal silent since 200 days ago is silent for the open-lead
    retention on the wall clock, but not yet in what was read: its next move is to come."""
    engine = Engine(SETTINGS, {})
    opened = [
        _message("lead-created", 0, 200.0, source="referral"),
        _message("contact-attempted", 1, 200.0, channel="call", connected=True),
        _message("stage-changed", 2, 200.0, from_stage=None, to_stage="new"),
        _message("email-opened", 3, 200.0, message_id="m0"),
    ]
    engine.process(opened, NOW)
    assert engine.evict(NOW) == [], "forgotten before the read reached its next move"
    engine.process(
        [_message("stage-changed", 4, 150.0, from_stage="new", to_stage="won", deal_value=900)],
        NOW,
    )
    assert len(engine.leads) == 1, "its won move started a new lead"
    won = [
        s
        for s in engine_samples(engine, NOW)
        if s.metric == "sales_deals_won" and s.window is not None and s.window.name == "last_year"
    ]
    assert [(s.labels["source"], s.value) for s in won] == [("referral", 1.0)]


def test_an_open_deal_silent_for_the_open_retention_in_the_read_is_forgotten() -> None:
    engine = Engine(SETTINGS, {})
    engine.process([_message("stage-changed", 0, 200.0, from_stage=None, to_stage="new")], NOW)
    # every topic read 100 days past it (more than the open-lead retention of 90)
    fields: dict[str, dict[str, object]] = {
        "lead-created": {"source": "web"},
        "contact-attempted": {"channel": "call", "connected": False},
        "stage-changed": {"from_stage": None, "to_stage": "new"},
        "email-opened": {"message_id": "m1"},
    }
    others = [
        _message(kind, 10 + i, 100.0, **extra) for i, (kind, extra) in enumerate(fields.items())
    ]
    others = [m._replace(key=b"x", value=m.value.replace(b"old-lead", b"x")) for m in others]
    engine.process(others, NOW)
    assert "old-lead" in [lead.lead_id for lead in engine.evict(NOW)]


def test_a_topic_silent_but_with_a_backlog_is_behind_not_idle() -> None:
    """On a busy machine a partition can wait longer than a prune interval to be fetched:
    the consumer's backlog says it is behind, and the lead is kept."""
    engine = Engine(SETTINGS, {})
    engine.process([*_life(), _message("lead-created", 4, 20.01, source="referral")], NOW)
    later = NOW + SETTINGS.prune_interval_seconds  # every topic silent for a prune interval
    engine.note_backlog([(0, EventKind.EMAIL_OPENED)])
    assert engine.evict(later) == []
    engine.note_backlog([])
    assert [lead.lead_id for lead in engine.evict(later)] == ["old-lead"]
