"""What every fault scenario shares: a stream with a truth, a producer thread, and the checks.

A scenario builds a ``Stream`` (scrambled simulated history with duplicates, plus invalid
messages mixed in, and the truth of every prefix of it), feeds it from a background thread
(``Feed``) while it injects its faults, and ends with ``verify``: the KPIs summed over the
live workers equal the truth, every whole series is exported by exactly one worker, the
dead-letter topic holds exactly the invalid messages, and no alert id was published twice.
"""

from __future__ import annotations

import base64
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streamproc.config import Settings
from streamproc.kpis.catalogue import CATALOGUE
from streamproc.tools.sales_team import history, rfc3339
from tests.support.harness import SeriesKey, WorkerProcess, combined, wait_until
from tests.support.scenario import noon_zone
from tests.support.truth import Truth, differences, key_of

WHOLE = frozenset(kpi.name for kpi in CATALOGUE if not kpi.split)
_ASSIGNED = re.compile(r"assigned lead partitions \[([0-9, ]*)\]")


# --- the stream ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    event: tuple[str, dict[str, Any]] | None  # None: invalid, must be dead-lettered


def invalid_messages(settings: Settings, count: int, tag: str) -> list[Message]:
    """``count`` messages the worker must dead-letter, each with a value of its own."""
    topic = settings.topic
    out: list[Message] = []
    for i in range(count):
        lead = f"bad-{tag}-{i}"
        base = {"event_id": f"{lead}-e", "lead_id": lead, "occurred_at": rfc3339(time.time())}
        kind = i % 6
        if kind == 0:  # not JSON
            out.append(
                Message(topic("lead-created"), lead.encode(), f"not json {lead}".encode(), None)
            )
        elif kind == 1:  # wrong types
            value = {**base, "occurred_at": 12345, "rep_id": "r", "source": "web"}
            out.append(Message(topic("lead-created"), lead.encode(), orjson.dumps(value), None))
        elif kind == 2:  # the key is not the lead_id
            value = {**base, "rep_id": "r", "source": "web"}
            out.append(Message(topic("lead-created"), b"someone-else", orjson.dumps(value), None))
        elif kind == 3:  # an hour in the future (more than 5 minutes ahead)
            value = {**base, "occurred_at": rfc3339(time.time() + 3600), "rep_id": "r"}
            value |= {"channel": "call", "connected": True}
            out.append(
                Message(topic("contact-attempted"), lead.encode(), orjson.dumps(value), None)
            )
        elif kind == 4:  # a rule broken: rep_id missing on a stage change
            value = {**base, "from_stage": None, "to_stage": "qualified"}
            out.append(Message(topic("stage-changed"), lead.encode(), orjson.dumps(value), None))
        else:  # not UTF-8 (dead-lettered base64)
            out.append(
                Message(topic("email-opened"), lead.encode(), b"\xff\xfe" + lead.encode(), None)
            )
    return out


def business_events(
    events: Sequence[tuple[str, dict[str, Any]]], count: int, seed: int, span: tuple[float, float]
) -> list[tuple[str, dict[str, Any]]]:
    """``count`` NPS answers, churns and costs within ``span`` (event times), about the
    customers of the leads of ``events`` (a lead's customer is its ``customer_id``, else
    itself; half about those won) and a tenth about customers never seen; costs with and
    without a customer,
    some spread over a period from a day before to a month after."""
    rng = random.Random(seed)
    created = [ev for kind, ev in events if kind == "lead-created"]
    customer_of = {ev["lead_id"]: ev.get("customer_id") or ev["lead_id"] for ev in created}
    customers = sorted(set(customer_of.values()))
    won = sorted(
        {customer_of.get(ev["lead_id"], ev["lead_id"])
         for kind, ev in events if kind == "stage-changed" and ev["to_stage"] == "won"}
    )  # fmt: skip
    sources = sorted({ev["source"] for ev in created})
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        at = rng.uniform(*span)
        event: dict[str, Any] = {"event_id": f"biz-{seed}-{i}", "occurred_at": rfc3339(at)}
        draw = rng.random()  # half about customers won, a tenth about strangers
        pool = won if draw < 0.5 and won else customers
        customer = rng.choice(pool) if draw < 0.9 else f"nobody-{seed}-{i}"
        draw = rng.random()
        if draw < 0.4:
            event |= {"customer_id": customer, "score": rng.randrange(11)}
            if rng.random() < 0.2:
                event["rep_id"] = f"rep-{rng.randrange(3)}"
            out.append(("nps-responded", event))
        elif draw < 0.55:
            event |= {"customer_id": customer, "reason": rng.choice(["price", "service"])}
            if rng.random() < 0.7:
                event["revenue_lost"] = round(rng.uniform(100, 5_000), 2)
            out.append(("customer-churned", event))
        else:
            category = rng.choice(["marketing", "marketing", "sales", "service"])
            event |= {"amount": round(rng.uniform(10, 1_000), 2), "category": category}
            if category == "marketing":
                event["source"] = rng.choice(sources)
            elif rng.random() < 0.5:
                event["customer_id"] = customer
            if rng.random() < 0.3:
                start = at - 86400 * rng.random()
                event |= {"period_start": rfc3339(start), "period_end": rfc3339(at + 30 * 86400)}
            out.append(("cost-recorded", event))
    return out


class Stream:
    """Simulated history (scrambled, ~2 % duplicates) with invalid messages mixed in; with
    ``business``, that many cost, churn and NPS events too (``business_events``), and the
    won deals with their products and the leads with their customers and segments."""

    def __init__(
        self,
        settings: Settings,
        n_events: int,
        *,
        leads: int | None = None,
        span: float = 1_200.0,
        invalid: int | None = None,
        seed: int = 11,
        now: float | None = None,
        business: int = 0,
    ) -> None:
        self.settings = settings
        self.now = now if now is not None else time.time()
        events = list(
            history(
                settings,
                n_events,
                leads or max(100, n_events // 10),
                span,
                reps=6,
                seed=seed,
                end=self.now - 60,
                scramble=True,
                outcomes=business > 0,
            )
        )
        rng = random.Random(seed)
        for event in business_events(events, business, seed, (self.now - span, self.now - 60)):
            events.insert(rng.randrange(len(events) + 1), event)
        self.valid = [
            Message(settings.topic(kind), key_of(kind, ev), orjson.dumps(ev), (kind, ev))
            for kind, ev in events
        ]
        self.invalid = invalid_messages(
            settings, invalid if invalid is not None else max(12, n_events // 200), f"s{seed}"
        )
        self.messages = list(self.valid)
        for msg in self.invalid:  # spread over the whole stream, never first
            self.messages.insert(rng.randrange(1, len(self.messages)), msg)
        self.truth = Truth(settings)
        self._fed = 0

    def __len__(self) -> int:
        return len(self.messages)

    def kpis(self, upto: int | None = None) -> dict[SeriesKey, float]:
        """The exact KPIs of the first ``upto`` messages (all of them by default), now."""
        upto = len(self.messages) if upto is None else upto
        if upto < self._fed:
            raise ValueError("the truth only moves forward")
        fresh = [m.event for m in self.messages[self._fed : upto] if m.event is not None]
        self.truth.feed(fresh, time.time())
        self._fed = upto
        return self.truth.kpis(time.time())


FAULT_LEAD_CACHE = 100  # leads in memory per worker (the streams have ~600 - 2,500)


def fault_settings(settings_factory: Callable[..., Settings], **overrides: Any) -> Settings:
    """Test settings with a noon time zone (every event of the last 20 minutes is today),
    and a lead cache far smaller than the leads: every fault meets leads read back from
    the disk copy (``state.lead_cache``)."""
    now = time.time()
    values: dict[str, Any] = {"timezone": noon_zone(now), "partitions": 4}
    values["lead_cache_size"] = FAULT_LEAD_CACHE
    values["activity_targets"] = {"rep-01": 40, "rep-04": 25}
    return settings_factory(**{**values, **overrides})


# --- the producer thread ---------------------------------------------------------------------


class Feed:
    """Produces a stream's messages from a background thread, ``rate`` per second.

    ``produced`` counts the messages handed to the client; ``pause()`` flushes and blocks
    the thread at a chunk boundary (then the broker holds exactly ``produced`` messages).
    """

    def __init__(
        self,
        producer: Producer,
        messages: Sequence[Message],
        rate: float,
        chunk: int = 100,
        hold_back: int = 0,
    ) -> None:
        self.producer = producer
        self.messages = messages
        self.chunk = chunk
        self.interval = chunk / rate
        self.produced = 0
        # The last ``hold_back`` messages wait for release(): the stream cannot end before
        # the scenario's last fault, however slow the machine.
        self.limit = len(messages) - hold_back
        self._released = threading.Event()
        if hold_back <= 0:
            self._released.set()
        self.held = False
        self.stalls = 0
        self.errors: list[str] = []
        self._go = threading.Event()
        self._go.set()
        self._idle = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self.started_at = 0.0
        self.finished_at = 0.0

    def start(self) -> Feed:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def total(self) -> int:
        return len(self.messages)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _run(self) -> None:
        next_at = time.monotonic()
        for start in range(0, len(self.messages), self.chunk):
            if start >= self.limit and not self._released.is_set():
                self.producer.flush(30)
                self.held = True
                self._idle.set()  # pause() returns at once while held back
                self._released.wait()
                self._idle.clear()
                self.held = False
                next_at = time.monotonic()
            if not self._go.is_set():
                self.producer.flush(30)
                self._idle.set()
                self._go.wait()
                self._idle.clear()
                next_at = time.monotonic()
            for msg in self.messages[start : start + self.chunk]:
                self.producer.produce(
                    msg.topic, key=msg.key, value=msg.value, on_delivery=self._delivered
                )
                self.producer.poll(0)
            self.produced = min(len(self.messages), start + self.chunk)
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        self.producer.flush(60)
        self.finished_at = time.monotonic()
        self._done.set()
        self._idle.set()

    def pause(self, timeout: float = 60.0) -> int:
        """Stop at the next chunk boundary, everything so far delivered; returns ``produced``."""
        self._go.clear()
        if not self._idle.wait(timeout):
            raise TimeoutError("the feed did not pause")
        return self.produced

    def resume(self) -> None:
        self._go.set()

    def release(self) -> None:
        """Let the held-back tail of the stream go."""
        self._released.set()

    def hurry(self) -> None:
        """The rest of the stream as fast as the client takes it: for after a scenario's last
        fault, where the pace proves nothing and only makes the wait longer."""
        self.interval = 0.0

    def wait_for(self, fraction: float, timeout: float = 120.0) -> int:
        """Block until ``fraction`` of the stream has been produced; returns ``produced``."""
        wait_until(lambda: self.produced >= fraction * self.total or self.done, timeout, 0.05)
        return self.produced

    def join(self, timeout: float = 180.0) -> None:
        self.resume()
        self.release()
        if not self._done.wait(timeout):
            raise TimeoutError(f"the feed did not finish ({self.produced}/{self.total})")
        assert not self.errors, f"delivery errors: {self.errors[:5]}"

    def mid_stream(self) -> int:
        """Where the stream is now; asserts that it is neither before the start nor over."""
        position = self.produced
        # With ``hold_back`` the stream cannot end before the scenario releases its tail,
        # however slow or busy the machine: a fault is always injected mid-stream.
        assert 0 < position < self.total, f"not mid-stream: {position}/{self.total}"
        if self.held:
            self.stalls += 1  # reached the held-back tail before this fault: not flowing
        return position


# --- reading output topics -------------------------------------------------------------------


def read_topic(
    settings: Settings, topic: str, *, at_least: int = 0, idle: float = 2.0, timeout: float = 60.0
) -> list[Any]:
    """Every message of ``topic`` from the start (assign, no group), until ``idle`` s of
    silence after at least ``at_least`` messages (tansu's high watermark may lag: not used)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.broker_hosts,
            "group.id": f"fault-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
    )
    out: list[Any] = []
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(out) >= at_least and time.monotonic() - last >= idle:
                    break
                continue
            if msg.error():
                continue
            last = time.monotonic()
            # The client may deliver a record again (a fetch retried after an error): a
            # record is its (partition, offset); a duplicate *message* has its own offset.
            if (msg.partition(), msg.offset()) in seen:
                continue
            seen.add((msg.partition(), msg.offset()))
            out.append(msg)
    finally:
        consumer.close()
    return out


def _raw_bytes(letter: dict[str, Any]) -> bytes:
    if letter["raw_encoding"] == "base64":
        return base64.b64decode(letter["raw"])
    return str(letter["raw"]).encode()


@dataclass
class DeadLetterReport:
    expected: int
    written: int
    missing: list[bytes] = field(default_factory=list)
    unexpected: list[bytes] = field(default_factory=list)
    duplicated: dict[bytes, int] = field(default_factory=dict)
    # where each duplicated message came from: "topic[partition]@offset"
    origins: dict[bytes, set[str]] = field(default_factory=dict)


def dead_letter_report(settings: Settings, invalid: Iterable[Message]) -> DeadLetterReport:
    """The dead-letter topic against the invalid messages sent (by source topic and bytes)."""
    want = Counter((m.topic, m.value) for m in invalid)
    msgs = read_topic(
        settings, settings.topic("dead-letter"), at_least=sum(want.values()), idle=1.0
    )
    letters = [orjson.loads(m.value()) for m in msgs]
    got = Counter((d["topic"], _raw_bytes(d)) for d in letters)
    assert all(d["reason"] for d in letters), "a dead letter without a reason"
    duplicated = {v: n for (_, v), n in got.items() if n > 1}
    origins: dict[bytes, set[str]] = {}
    for d in letters:
        if _raw_bytes(d) in duplicated:
            origin = f"{d['topic']}[{d['partition']}]@{d['offset']}"
            origins.setdefault(_raw_bytes(d), set()).add(origin)
    return DeadLetterReport(
        expected=sum(want.values()),
        written=len(letters),
        missing=[v for (_, v) in want - got][:10],
        unexpected=[v for (_, v) in set(got) - set(want)][:10],
        duplicated=duplicated,
        origins=origins,
    )


_DEAD_LETTERED = re.compile(
    r"^\[([0-9-]+ [0-9:]+),(\d{3})\].* dead-lettered (\S+\[\d+\]@\d+):", re.M
)


def last_dead_letters(log: str, within: float = 0.5) -> set[str]:
    """Origins a worker dead-lettered in the last ``within`` seconds it logged any."""
    stamped = [
        (time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000, origin)
        for day, ms, origin in _DEAD_LETTERED.findall(log)
    ]
    if not stamped:
        return set()
    last = max(t for t, _ in stamped)
    return {origin for t, origin in stamped if t >= last - within}


def alert_counts(settings: Settings) -> tuple[Counter[str], dict[str, list[Any]]]:
    """How many times each alert id was published on ``sales.alerts``, and for the repeated
    ids where each copy is (partition, offset, fired_at, payload)."""
    msgs = read_topic(settings, settings.topic("alerts"), idle=1.0)
    counts: Counter[str] = Counter()
    where: dict[str, list[Any]] = {}
    for m in msgs:
        alert = orjson.loads(m.value())
        counts[alert["alert_id"]] += 1
        where.setdefault(alert["alert_id"], []).append(
            (m.partition(), m.offset(), alert["fired_at"], m.value())
        )
    return counts, {a: w for a, w in where.items() if counts[a] > 1}


def published_again(copies: list[Any]) -> bool:
    """True if the worker published the alert more than once: its copies differ (each
    publication stamps ``fired_at``). Byte-identical copies are one publication that the
    producer sent again after a connection cut lost the broker's answer."""
    return len({payload for *_, payload in copies}) > 1


# --- workers ---------------------------------------------------------------------------------


def assignment(worker: WorkerProcess) -> set[int] | None:
    """The lead partitions the worker's log says it holds since its last rebalance."""
    found = _ASSIGNED.findall(worker.log())
    if not found:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()}


def settled(workers: Sequence[WorkerProcess], partitions: int) -> bool:
    """Every live worker ready, and their assignments split the partitions exactly."""
    owned: list[int] = []
    for worker in workers:
        if not worker.ready():
            return False
        parts = assignment(worker)
        if parts is None:
            return False
        owned.extend(parts)
    return sorted(owned) == list(range(partitions))


def wait_settled(workers: Sequence[WorkerProcess], partitions: int, timeout: float = 60.0) -> float:
    """Wait until the group has settled on these workers; returns the seconds it took."""
    t0 = time.monotonic()
    try:
        wait_until(lambda: settled(workers, partitions), timeout, 0.25)
    except TimeoutError:
        states = {w.name: (w.get("/readyz")[0], assignment(w)) for w in workers}
        raise AssertionError(f"group did not settle in {timeout}s: {states}") from None
    return round(time.monotonic() - t0, 2)


def terminate(worker: WorkerProcess, timeout: float = 30.0) -> float:
    """SIGTERM the worker and wait for it to exit: the seconds it took (exit code checked)."""
    t0 = time.monotonic()
    worker.proc.terminate()
    worker.proc.wait(timeout)
    elapsed = time.monotonic() - t0
    assert worker.proc.returncode == 0, f"{worker.name} exited with {worker.proc.returncode}"
    return round(elapsed, 2)


def twice_exported(exporters: dict[SeriesKey, int]) -> list[SeriesKey]:
    """Whole series (ratios, means, quantiles, maxima) exported by more than one worker."""
    return sorted((k for k, n in exporters.items() if n > 1 and k[0] in WHOLE), key=str)


def events_total(workers: Iterable[WorkerProcess]) -> dict[str, float]:
    """``streamproc_events_total`` by outcome, summed over these workers."""
    out: Counter[str] = Counter()
    total, _ = combined(workers)
    for (name, labels), value in total.items():
        if name == "streamproc_events_total":
            out[dict(labels)["outcome"]] += value
    return dict(out)


def wait_exact(
    workers: Sequence[WorkerProcess],
    want: Callable[[], dict[SeriesKey, float]],
    timeout: float = 90.0,
    stream: Stream | None = None,
) -> float:
    """Wait until the KPIs summed over ``workers`` equal ``want()``; returns the seconds.
    On failure the message says what differs and, given the stream, which events the leads'
    changelog lacks (``diagnose_loss``)."""
    t0 = time.monotonic()
    last: dict[str, Any] = {}

    def agree() -> bool:
        nonlocal last
        total, _ = combined(workers)
        last = differences(total, want())
        return not last

    try:
        wait_until(agree, timeout, 1.0)
    except TimeoutError:
        diagnosis = diagnose_loss(stream) if stream is not None else {}
        raise AssertionError(
            f"KPIs differ from the truth after {timeout}s: {last}; changelog: {diagnosis}"
        ) from None
    return round(time.monotonic() - t0, 2)


def check_handover(
    workers: Sequence[WorkerProcess], want: dict[SeriesKey, float]
) -> dict[str, int]:
    """On one scrape of all workers: no whole series twice, and every true series present."""
    total, exporters = combined(workers)
    twice = twice_exported(exporters)
    missing = [k for k in want if k[0].startswith("sales_") and k not in total]
    assert not twice, f"whole series exported by two workers: {twice[:5]}"
    assert not missing, f"series exported by no worker: {sorted(missing, key=str)[:5]}"
    return {"series": len(total), "whole_series": sum(1 for k in total if k[0] in WHOLE)}


def verify(
    stream: Stream,
    live: Sequence[WorkerProcess],
    figures: dict[str, Any],
    *,
    timeout: float = 90.0,
    crashed: WorkerProcess | None = None,
    connection_cut: bool = False,
) -> None:
    """The end of every scenario: exact KPIs, hand-over, dead letters, alerts. Fills figures.

    Dead letters: each invalid message, nothing else, once whatever the fault (a replay
    finds the partition's dead-letter mark). Alerts: each id once. The exception is a crash
    (``crashed``: the worker killed): killed between publishing an alert or a dead letter
    and changelogging that it did, its successor publishes it again (at-least-once, same id
    or same origin). Repeated alerts are counted; a repeated dead letter must be one the
    killed worker wrote in its last half-second of dead-lettering. After a ``connection_cut``
    an alert may be there twice byte for byte: tansu has no idempotent producer, and a
    produce request whose answer the cut lost is sent again (real Kafka with
    ``STREAMPROC_PRODUCER_IDEMPOTENCE`` drops such a retry). Published again it may not be.
    """
    figures["events"] = len(stream.valid)
    figures["invalid"] = len(stream.invalid)
    figures["converged_s"] = wait_exact(live, stream.kpis, timeout, stream)
    # Converged: nothing lost (no series missing or short) and nothing counted twice.
    figures["lost"] = 0
    figures["double_counted"] = 0
    figures.update(check_handover(live, stream.kpis()))
    outcomes = events_total(live)
    figures["live_outcomes"] = {k: int(v) for k, v in sorted(outcomes.items())}
    report = dead_letter_report(stream.settings, stream.invalid)
    figures["dead_letters"] = report.written
    figures["dead_letter_duplicates"] = sum(n - 1 for n in report.duplicated.values())
    assert not report.missing, f"invalid messages not dead-lettered: {report.missing}"
    assert not report.unexpected, f"dead letters for valid messages: {report.unexpected}"
    repeated = {o for origins in report.origins.values() for o in origins}
    excused = last_dead_letters(crashed.log()) if crashed is not None else set()
    assert repeated <= excused, f"dead letters written twice: {sorted(repeated - excused)[:5]}"
    alerts, repeats = alert_counts(stream.settings)
    figures["alerts"] = sum(alerts.values())
    figures["alert_ids_repeated"] = len(repeats)
    assert alerts, "no alert at all: the scenario should breach some SLAs"
    if crashed is None:
        resent = {a: c for a, c in repeats.items() if not published_again(c)}
        figures["alert_copies_resent"] = sum(len(c) - 1 for c in resent.values())
        again = {a: [c[:3] for c in copies] for a, copies in repeats.items() if a not in resent}
        assert not again, f"alert ids published twice: {dict(list(again.items())[:3])}"
        assert connection_cut or not resent, f"alerts resent: {list(resent)[:3]}"


def committed_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets of the input topics (absent: none committed)."""
    consumer = Consumer({"bootstrap.servers": settings.broker_hosts, "group.id": settings.app_id})
    try:
        tps = [
            TopicPartition(settings.topic(kind), p)
            for kind in ("lead-created", "contact-attempted", "stage-changed", "email-opened")
            for p in range(settings.partitions)
        ]
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.committed(tps, timeout=10)
            if tp.offset >= 0
        }
    finally:
        consumer.close()


def diagnose_loss(stream: Stream, workers: Sequence[WorkerProcess] = ()) -> dict[str, Any]:
    """Why KPIs fell short: the events of the truth missing from the leads' final changelog
    state, and whether an earlier version of the lead held them (then a stale state was
    written over it) or none did (the update never reached the changelog)."""
    from streamproc.engine.lead import LeadState

    settings = stream.settings
    topic = f"{settings.app_id}-leads-changelog"
    versions: dict[str, list[tuple[int, int, set[str] | None]]] = {}
    detail: dict[str, list[tuple[int, int, float, Any]]] = {}
    for msg in read_topic(settings, topic, idle=2.0):
        if msg.key().startswith(b"\x00"):
            continue  # end markers and dead-letter marks, not leads
        key = msg.key().decode(errors="replace")
        value = msg.value()
        state = None if not value else LeadState.loads(value)
        ids = None if state is None else set(state.ids)
        versions.setdefault(key, []).append((msg.partition(), msg.offset(), ids))
        stamp = msg.timestamp()[1] / 1000
        shown = None if state is None else (sorted(ids or ()), len(state.alerts))
        detail.setdefault(key, []).append((msg.partition(), msg.offset(), stamp, shown))
    truth_leads = stream.truth.engine.leads
    missing: dict[str, list[str]] = {}
    overwritten: dict[str, list[str]] = {}
    for lead_id, lead in truth_leads.items():
        history_ = versions.get(lead_id, [])
        final = history_[-1][2] if history_ else None
        lost = sorted(set(lead.ids) - (final or set()))
        if not lost:
            continue
        missing[lead_id] = lost
        if any(ids and set(lost) & ids for _, _, ids in history_):
            overwritten[lead_id] = lost
    where = {}
    for i, msg in enumerate(stream.messages):
        event = msg.event[1] if msg.event is not None and msg.event[0] else None
        if event is not None and event["event_id"] in missing.get(event["lead_id"], ()):
            where[event["event_id"]] = i
    # Were the missing events on the input topics at all, and where (committed past them?)
    lost_ids = {e for ids in missing.values() for e in ids}
    on_input: dict[str, tuple[str, int, int]] = {}
    if lost_ids:
        for event_id, msg in _input_events(settings):
            if event_id in lost_ids:
                on_input[event_id] = (msg.topic(), msg.partition(), msg.offset())
    committed = committed_offsets(settings)
    out: dict[str, Any] = {
        "on_input_topics": {
            e: (*where_, committed.get(where_[:2])) for e, where_ in on_input.items()
        },
        "not_on_input_topics": sorted(lost_ids - set(on_input))[:10],
        "leads_short": len(missing),
        "events_missing": sum(len(v) for v in missing.values()),
        "leads_overwritten_by_stale_state": len(overwritten),
        "stream_positions": sorted(where.values())[:20],
        "example": dict(list(missing.items())[:3]),
    }
    if overwritten:
        lead_id = next(iter(overwritten))
        out["example_versions"] = {lead_id: detail[lead_id]}
        out["example_arrivals"] = [
            (i, m.event[1]["event_id"])
            for i, m in enumerate(stream.messages)
            if m.event is not None and m.event[1]["lead_id"] == lead_id
        ]
    return out


def _input_events(settings: Settings) -> Iterator[tuple[str | None, Any]]:
    """Every record on the four input topics with its ``event_id`` (``None`` where the value
    is not a JSON object), each topic read to its end."""
    for kind in ("lead-created", "contact-attempted", "stage-changed", "email-opened"):
        for msg in read_topic(settings, settings.topic(kind), idle=1.0):
            try:
                event_id = orjson.loads(msg.value()).get("event_id")
            except (orjson.JSONDecodeError, AttributeError):
                event_id = None
            yield event_id, msg


def shutdown_audit(stream: Stream) -> dict[str, int]:
    """After a worker left and before anyone took over: its input offsets against its leads'
    changelog. ``applied_not_committed``: events whose effect is in the changelog but whose
    offset was not committed (the next owner replays them: harmless for the KPIs, but the
    batch in hand was not finished and committed). ``committed_not_applied``: offsets
    committed without their effect in the changelog (lost for good)."""
    from streamproc.engine.lead import LeadState

    settings = stream.settings
    valid = {m.event[1]["event_id"] for m in stream.valid if m.event is not None}
    first: dict[str, tuple[tuple[str, int], int]] = {}
    for event_id, msg in _input_events(settings):
        if event_id not in valid:
            continue
        where = ((msg.topic(), msg.partition()), msg.offset())
        if event_id not in first or where[1] < first[event_id][1]:
            first[event_id] = where
    ever: set[str] = set()
    final: dict[str, set[str]] = {}
    topic = f"{settings.app_id}-leads-changelog"
    for msg in read_topic(settings, topic, idle=1.0):
        if msg.key().startswith(b"\x00"):
            continue  # end markers and dead-letter marks, not leads
        key = msg.key().decode(errors="replace")
        if not msg.value():
            final.pop(key, None)
            continue
        ids = set(LeadState.loads(msg.value()).ids)
        ever |= ids
        final[key] = ids
    applied = set().union(*final.values()) if final else set()
    committed = committed_offsets(settings)
    out = {"committed_not_applied": 0, "applied_not_committed": 0, "committed_events": 0}
    for event_id, (tp, offset) in first.items():
        done = committed.get(tp, 0)
        if offset < done:
            out["committed_events"] += 1
            if event_id not in applied:
                out["committed_not_applied"] += 1
        elif event_id in ever:
            out["applied_not_committed"] += 1
    return out


def stop_all(workers: Iterable[WorkerProcess], timeout: float = 15.0) -> None:
    """SIGTERM every live worker at once, then wait for each (the fixture stops them one by
    one: several seconds each)."""
    running = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    for worker in running:
        worker.proc.terminate()
    deadline = time.monotonic() + timeout
    for worker in running:
        try:
            worker.proc.wait(max(0.1, deadline - time.monotonic()))
        except Exception:
            worker.proc.kill()
            worker.proc.wait(5)
