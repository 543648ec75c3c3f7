"""Calendar periods through the real broker: a hand-computed history over last month, this
month and the last fiscal quarter (fiscal year from April, Tokyo time), produced by an
external client scrambled and twice over; the same values after the leads of last month are
forgotten, after a SIGKILL and a take-over by two workers, nothing counted twice."""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from confluent_kafka import Producer

from streamproc.config import Settings, child_env
from streamproc.engine.aggregates import SKETCH_ERROR
from streamproc.engine.windows import PERIODS, WindowClock
from streamproc.tools.net import free_port
from streamproc.tools.sales_team import history
from tests.support.harness import SeriesKey, WorkerProcess, combined, series, wait_until

ZONE = "Asia/Tokyo"  # UTC+9: 23:30 UTC on the last day of a month is 08:30 on the 1st
FISCAL = 4
HOUR = 3600.0


class History:
    """Five leads placed by the calendar of the day the test runs; which period holds each
    is worked out below from their months, the values by hand."""

    def __init__(self, now: float) -> None:
        clock = WindowClock(ZoneInfo(ZONE), FISCAL)
        self.now = now
        this = clock.month(now)
        self.month_start = clock.month_start(this)
        last = clock.month_start(this - 1)
        quarter = clock.period_start(3, this)
        before_quarter = clock.month_start(quarter - 1)  # in last_quarter
        self.boundary = self.month_start + 8.5 * HOUR  # 23:30 UTC the day before
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.month_of: dict[str, int] = {}
        # lead, created at, rep, source, response (s), outcome, value
        self._lead("A", last + 2 * 24 * HOUR, "r1", "referral", 3600, "won", 1000, this - 1)
        self._lead("B", last + 4 * 24 * HOUR, "r1", "facebook", 600, "lost", None, this - 1)
        self._lead("C", now - 50 * 60, "r2", "referral", 300, "won", 500, this)
        self._lead("D", self.boundary, "r2", "webinar", 120, None, None, this)
        self._lead(
            "E", before_quarter + 10 * 24 * HOUR, "r1", "referral", 60, "won", 2000, quarter - 1
        )
        self.windows = {name: set(self._months(clock, name)) for name in PERIODS}

    def _months(self, clock: WindowClock, name: str) -> range:
        bounds = clock.bounds(name, self.now)
        return range(bounds.first_key, bounds.last_key + 1)

    def _lead(
        self,
        lead: str,
        created: float,
        rep: str,
        source: str,
        response: float,
        outcome: str | None,
        value: float | None,
        month: int,
    ) -> None:
        self.month_of[lead] = month
        self._add("lead-created", lead, created, rep_id=rep, source=source)
        self._add(
            "contact-attempted", lead, created + response, rep_id=rep, channel="call",
            connected=True,
        )  # fmt: skip
        if outcome == "won":
            self._add("stage-changed", lead, created + response + 60, rep_id=rep,
                      to_stage="won", deal_value=value)  # fmt: skip
        elif outcome == "lost":
            self._add("stage-changed", lead, created + response + 60, rep_id=rep,
                      to_stage="lost", lost_reason="price")  # fmt: skip

    def _add(self, kind: str, lead: str, t: float, **fields: Any) -> None:
        occurred = datetime.fromtimestamp(t, UTC).isoformat()
        event_id = f"{lead}-{kind}"
        self.events.append(
            (kind, {"event_id": event_id, "lead_id": lead, "occurred_at": occurred, **fields})
        )

    def leads_in(self, window: str) -> set[str]:
        return {lead for lead, month in self.month_of.items() if month in self.windows[window]}

    def expected(self) -> dict[SeriesKey, float]:
        """The hand computation: per lead, what it adds; per window, the leads in it."""
        created = {"A": ("r1", "referral"), "B": ("r1", "facebook"), "C": ("r2", "referral"),
                   "D": ("r2", "webinar"), "E": ("r1", "referral")}  # fmt: skip
        rep = {lead: labels[0] for lead, labels in created.items()}
        revenue = {"A": 1000.0, "C": 500.0, "E": 2000.0}
        lost = {"B"}
        response = {"A": 3600.0, "B": 600.0, "C": 300.0, "D": 120.0, "E": 60.0}
        out: dict[SeriesKey, float] = {}
        for window in PERIODS:
            leads = self.leads_in(window)
            for lead in leads:
                r, source = created[lead]
                key = series("sales_leads_created", rep=r, source=source, window=window)
                out[key] = out.get(key, 0) + 1
                if lead in revenue:
                    key = series("sales_revenue_won", rep=r, window=window)
                    out[key] = out.get(key, 0) + revenue[lead]
            for r in ("r1", "r2"):
                won = sum(1 for lead in leads if lead in revenue and rep[lead] == r)
                closed = won + sum(1 for lead in leads if lead in lost and rep[lead] == r)
                if closed:
                    out[series("sales_rep_win_ratio", rep=r, window=window)] = won / closed
                times = sorted(response[lead] for lead in leads if rep[lead] == r)
                if times:
                    mean = sum(times) / len(times)
                    out[series("sales_response_time_avg_seconds", rep=r, window=window)] = mean
                    median = (times[(len(times) - 1) // 2] + times[len(times) // 2]) / 2
                    key = series(
                        "sales_response_time_seconds", rep=r, window=window, quantile="0.5"
                    )
                    out[key] = median
        return out

    def messages(self, prefix: str) -> list[tuple[str, bytes, bytes]]:
        """Every event twice, scrambled."""
        out = [(prefix + k, e["lead_id"].encode(), orjson.dumps(e)) for k, e in self.events] * 2
        random.Random(18).shuffle(out)
        return out


def _periods(samples: dict[SeriesKey, float]) -> dict[SeriesKey, float]:
    names = ("sales_leads_created", "sales_revenue_won", "sales_rep_win_ratio",
             "sales_response_time_avg_seconds", "sales_response_time_seconds")  # fmt: skip
    return {
        key: value
        for key, value in samples.items()
        if key[0] in names
        and dict(key[1]).get("window") in PERIODS
        and dict(key[1]).get("quantile", "0.5") == "0.5"
    }


def _differences(got: dict[SeriesKey, float], want: dict[SeriesKey, float]) -> dict[str, Any]:
    wrong = {}
    for key in set(got) | set(want):
        g, w = got.get(key), want.get(key)
        quantile = key[0] == "sales_response_time_seconds"
        tolerance = SKETCH_ERROR * abs(w or 0) if quantile else 1e-6
        if g is None or w is None or abs(g - w) > tolerance:
            wrong[f"{key[0]}{sorted(key[1])}"] = (g, w)
    return wrong


def _agrees(workers: list[WorkerProcess], want: dict[SeriesKey, float]) -> Callable[[], bool]:
    def check() -> bool:
        total, _ = combined(workers)
        return not _differences(_periods(total), want)

    return check


def _settle(workers: list[WorkerProcess], want: dict[SeriesKey, float], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):  # the assertion says what differs
        wait_until(_agrees(workers, want), timeout=timeout)
    total, _ = combined(workers)
    assert not _differences(_periods(total), want)


def _produce(producer: Producer, history: History, settings: Settings) -> None:
    for topic, key, value in history.messages(settings.topic_prefix):
        producer.produce(topic, key=key, value=value)
    producer.flush(10)


def test_periods_by_hand_across_forgetting_a_kill_and_two_workers(
    settings_factory: Callable[..., Settings],
    make_topics: Callable[[Settings], None],
    worker_factory: Callable[..., WorkerProcess],
    kafka_producer: Callable[..., Producer],
) -> None:
    now = time.time()
    history = History(now)
    if now - history.boundary < 2 * HOUR:
        pytest.skip("the first hours of a month (Tokyo): this month holds no history yet")
    settings = settings_factory(
        timezone=ZONE, fiscal_year_start_month=FISCAL, partitions=4, prune_interval_seconds=2
    )
    make_topics(settings)
    worker = worker_factory(settings)
    _produce(kafka_producer(), history, settings)
    want = history.expected()
    _settle([worker], want, timeout=30)
    # A, B and E (last month, last quarter: events more than 7 days old) are forgotten:
    # their part of the periods is in the rollups now
    wait_until(lambda: _evicted(worker) >= 3, timeout=20)
    _settle([worker], want, timeout=10)
    worker.kill()
    # a take-over by two workers: they restore the rollups, not the forgotten leads
    first = worker_factory(settings.model_copy(update={"web_port": free_port()}), ready=False)
    second = worker_factory(settings.model_copy(update={"web_port": free_port()}), ready=False)
    first.wait_ready()
    second.wait_ready()
    workers = [first, second]
    _settle(workers, want, timeout=45)
    _, exporters = combined(workers)
    whole = [k for k in _periods(exporters) if k[0] != "sales_leads_created"]
    whole = [k for k in whole if k[0] != "sales_revenue_won"]
    assert whole and all(exporters[k] == 1 for k in whole), "ratios, quantiles: once"
    assert not any(_evicted(w) for w in workers), "the forgotten leads were not recovered"
    # /kpis answers for both workers, each series whole, the periods among the windows
    for window in ("month", "last_month", "year"):
        status, body = first.get(f"/kpis?metric=sales_revenue_won&window={window}")
        answer = orjson.loads(body)
        assert status == 200 and answer["complete"], answer
        got = {row["labels"]["rep"]: row["value"] for row in answer["kpis"]}
        expected = {
            dict(k[1])["rep"]: v
            for k, v in want.items()
            if k[0] == "sales_revenue_won" and dict(k[1])["window"] == window
        }
        assert got == expected, window


def _evicted(worker: WorkerProcess) -> int:
    return sum(int(n) for n in re.findall(r"evicted (\d+) leads", worker.log()))


@pytest.mark.parametrize(
    ("day", "windows"),
    [
        # fiscal Q3 is October - December: last month A, B; this month C, D (D by Tokyo
        # time: 23:30 UTC on 30 November); E in September, the last quarter
        (
            datetime(2026, 12, 6, 12, tzinfo=UTC),
            {"month": "CD", "last_month": "AB", "quarter": "ABCD", "last_quarter": "E",
             "year": "ABCDE", "last_year": ""},
        ),
        # fiscal Q4 starts in January: last month (December) is in the last quarter
        (
            datetime(2027, 1, 20, 12, tzinfo=UTC),
            {"month": "CD", "last_month": "ABE", "quarter": "CD", "last_quarter": "ABE",
             "year": "ABCDE", "last_year": ""},
        ),
        # April starts a fiscal year: March is last year's
        (
            datetime(2027, 4, 20, 12, tzinfo=UTC),
            {"month": "CD", "last_month": "ABE", "quarter": "CD", "last_quarter": "ABE",
             "year": "CD", "last_year": "ABE"},
        ),
    ],
)  # fmt: skip
def test_the_history_lands_in_the_periods_worked_out_by_hand(
    day: datetime, windows: dict[str, str]
) -> None:
    history = History(day.timestamp())
    assert {w: "".join(sorted(history.leads_in(w))) for w in PERIODS} == windows
    # D is the time zone's: in UTC its creation is on the last day of last month
    utc = WindowClock(ZoneInfo("UTC"), FISCAL)
    assert utc.month(history.boundary) == utc.month(day.timestamp()) - 1


def test_a_replayed_year_fills_every_period_at_once(
    settings_factory: Callable[..., Settings],
    make_topics: Callable[[Settings], None],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """`streamproc replay` of a year of history (with its progress bar): every period holds
    the leads created in it, counted from the file, also once they are forgotten."""
    settings = settings_factory(
        timezone=ZONE, fiscal_year_start_month=FISCAL, partitions=4, prune_interval_seconds=5
    )
    # a topic partition not fetched for a prune interval counts as idle (caught up): under
    # load, 1 s forgot leads whose lives were still being read
    make_topics(settings)
    worker = worker_factory(settings)
    now = time.time()
    events = list(history(settings, 6000, 600, 365 * 86400.0, reps=4, seed=18, end=now - 60))
    path = tmp_path / "year.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"type": k, "event": e}) + b"\n" for k, e in events))
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", str(path)],
        env={**child_env(settings), "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "6000 events sent" in done.stderr.replace(",", "")
    clock = WindowClock(ZoneInfo(ZONE), FISCAL)

    def per_period(kind: str, to_stage: str | None = None) -> dict[str, float]:
        months = Counter(
            clock.month(datetime.fromisoformat(e["occurred_at"]).timestamp())
            for k, e in events
            if k == kind and (to_stage is None or e.get("to_stage") == to_stage)
        )
        out = {}
        for name in PERIODS:
            bounds = clock.bounds(name, now)
            n = sum(c for m, c in months.items() if bounds.first_key <= m <= bounds.last_key)
            if n:
                out[name] = float(n)
        return out

    # counted from the file: the leads created and the deals won in each period
    want = {
        "sales_leads_created": per_period("lead-created"),
        "sales_deals_won": per_period("stage-changed", "won"),
    }
    assert set(want["sales_leads_created"]) >= {"year", "last_year"}
    assert sum(want["sales_leads_created"].values()) > 600  # overlapping periods

    def served() -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {metric: {} for metric in want}
        for (metric, labels), value in worker.samples().items():
            window = dict(labels).get("window")
            if metric in want and window in PERIODS:
                out[metric][window] = out[metric].get(window, 0.0) + value
        return out

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: served() == want and _evicted(worker) > 500, timeout=60)
    assert served() == want, f"forgot {_evicted(worker)} times"
    # the year's leads are forgotten, each once (none before its life was read whole)
    assert 500 < _evicted(worker) <= 600
