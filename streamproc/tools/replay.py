"""``streamproc replay FILE``: produce a history of events from JSON Lines, validated as it goes.

One event per line, in one of two forms (blank lines are skipped):

- wrapped: ``{"type": "lead-created", "event": {...}}`` (``kind`` may stand for ``type``);
  ``event`` is the event object, bare or in a CloudEvents 1.0 structured envelope;
- flat: ``{"type": "lead-created", "event_id": ..., "lead_id": ..., ...}``, the event's own
  fields next to a ``type`` (or ``kind``) field, which is removed before sending. A flat
  CloudEvents envelope keeps its ``type`` and names the kind in it (``...lead-created``).

The type is one of ``lead-created``, ``contact-attempted``, ``stage-changed``,
``email-opened``; ``lead_created`` and dotted names ending in a kind (a topic name such as
``sales.lead-created``, a CloudEvents type such as ``com.acme.crm.lead-created``) are
accepted too. Each event is checked with the worker's own parser (``EventParser``) and sent
to its topic keyed by its ``lead_id`` (a business event by its ``customer_id``, a cost
without one by its ``event_id``). A bad line is reported as ``FILE:LINE: reason`` and
skipped; the rest is still sent.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

import orjson

from streamproc.config import Settings
from streamproc.contract.events import BusinessKind, EventKind, EventParser, Kind
from streamproc.exceptions import InvalidEvent, StreamprocError
from streamproc.tools.progress import Progress

__all__ = [
    "BadLine",
    "LineParser",
    "ParsedLine",
    "ReplayReport",
    "replay",
    "run_replay",
]

MAX_SHOWN = 1000
"""Bad lines printed one by one; further ones are counted in the summary only."""
# the lead events and the business events (spec/business-events.md)
_KINDS: dict[str, Kind] = {kind.value: kind for kind in (*EventKind, *BusinessKind)}
_KIND_FIELDS = ("type", "kind")


class ReplayError(StreamprocError):
    """The file cannot be read at all (the CLI prints the message and exits with 2)."""


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """A validated line, ready to send: the topic kind, the key and the value bytes."""

    kind: Kind
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class BadLine:
    lineno: int
    reason: str


@dataclass(slots=True)
class ReplayReport:
    """What a replay did; ``exit_code`` is 0 when every line was sent, 1 otherwise."""

    lines: int = 0
    """Non-blank lines read."""
    sent: int = 0
    """Events the broker acknowledged (0 on a dry run)."""
    valid: int = 0
    bad: int = 0
    failed: int = 0
    """Valid events whose delivery failed."""
    bad_lines: list[BadLine] = field(default_factory=list)
    """The first ``MAX_SHOWN`` bad lines."""
    by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 0 if self.bad == 0 and self.failed == 0 else 1

    @property
    def events_per_second(self) -> float:
        return self.valid / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        verb = "validated (dry run)" if self.dry_run else "sent"
        count = self.valid if self.dry_run else self.sent
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())) or "none"
        text = (
            f"replay: {self.lines} lines, {count} events {verb} in {self.seconds:.1f}s "
            f"({self.events_per_second:,.0f}/s; {kinds}), {self.bad} bad"
        )
        if self.failed:
            text += f", {self.failed} not delivered"
        return text


def _kind(name: object) -> Kind:
    if not isinstance(name, str):
        raise InvalidEvent(f"event type must be a string, got {type(name).__name__}")
    text = name.strip().lower().replace("_", "-")
    kind = _KINDS.get(text) or _KINDS.get(text.rsplit(".", 1)[-1])
    if kind is None:
        shown = name if len(name) <= 64 else name[:61] + "..."
        raise InvalidEvent(f"unknown event type {shown!r} (expected {', '.join(_KINDS)})")
    return kind


def _key_of(kind: Kind, event: dict[str, Any]) -> bytes | None:
    """The message key: a lead event's lead_id, a churn's or NPS answer's customer_id, a
    cost's customer_id else event_id (inside ``data`` for a CloudEvents envelope)."""
    fields = ("lead_id",) if isinstance(kind, EventKind) else ("customer_id", "event_id")
    data = event.get("data")
    inner: dict[str, Any] = data if isinstance(data, dict) else {}
    for name in fields:
        value = event.get(name, inner.get(name))
        if isinstance(value, str):
            return value.encode()
    return None


class LineParser:
    """Turns one JSON Lines line into a ``ParsedLine`` or raises ``InvalidEvent(reason)``."""

    def __init__(self, settings: Settings) -> None:
        self._parser = EventParser(settings)

    def split(self, line: bytes | str) -> tuple[Kind, dict[str, Any]]:
        """The kind and the event object of a line, not yet validated as an event."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(" ".join(f"not JSON: {exc}".split())) from None
        if type(obj) is not dict:
            raise InvalidEvent("not a JSON object")
        if "event" in obj:  # wrapped: {"type": ..., "event": {...}}
            name = next((obj[f] for f in _KIND_FIELDS if f in obj), None)
            if name is None:
                raise InvalidEvent('no event type: expected a "type" or "kind" next to "event"')
            event = obj["event"]
            if type(event) is not dict:
                raise InvalidEvent('"event" must be a JSON object')
            return _kind(name), event
        if "specversion" in obj:  # a flat CloudEvents envelope: its own type names the kind
            return _kind(obj.get("kind", obj.get("type"))), obj
        present = [f for f in _KIND_FIELDS if f in obj]
        if not present:
            raise InvalidEvent('no event type: expected a "type" or "kind" field')
        kind = _kind(obj[present[0]])
        for name in present:
            del obj[name]
        return kind, obj

    def parse(self, line: bytes | str, now: float) -> ParsedLine:
        kind, event = self.split(line)
        key = _key_of(kind, event)
        value = orjson.dumps(event)
        parsed = self._parser.parse(kind, key, value, now)
        if key is None:  # an envelope's id stood for the event_id
            key = (getattr(parsed, "lead_id", None) or parsed.event_id).encode()
        return ParsedLine(kind, key, value)


class Sender(Protocol):
    """What replay needs of a producer (``EventProducer`` has it)."""

    sent: int
    failed: int

    async def send_raw(
        self, topic: str, key: str | bytes | None, value: bytes | None
    ) -> asyncio.Future[Any]: ...

    async def flush(self) -> None: ...


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line, bytes read so far) for every line."""
    position = 0
    for lineno, line in enumerate(handle, 1):
        position += len(line)
        yield lineno, line, position


async def replay(
    settings: Settings,
    path: Path | str,
    *,
    producer: Sender | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    dry_run: bool = False,
    on_bad: Callable[[BadLine], None] | None = None,
    yield_every: int = 2000,
) -> ReplayReport:
    """Validate every line of ``path`` (``-``: stdin) and send the good ones.

    ``producer`` must be started (and is left running); without one an ``EventProducer``
    is opened for the run. Bad lines go to ``on_bad`` (default: printed above the progress
    bar as ``FILE:LINE: reason``, the first ``MAX_SHOWN`` of them).
    """
    if producer is None and not dry_run:
        from streamproc.kafka.producer import EventProducer

        async with EventProducer(settings, linger_ms=20, client_id="streamproc-replay") as own:
            return await replay(
                settings,
                path,
                producer=own,
                progress=progress,
                stream=stream,
                dry_run=dry_run,
                on_bad=on_bad,
                yield_every=yield_every,
            )
    out = stream if stream is not None else sys.stderr
    name = str(path)
    handle, total = _open(path)
    bar = Progress(total, stream=out, enabled=progress, label="replay")
    report = ReplayReport(dry_run=dry_run)

    def report_bad(bad: BadLine) -> None:
        if len(report.bad_lines) < MAX_SHOWN:
            report.bad_lines.append(bad)
            if on_bad is not None:
                on_bad(bad)
            else:
                bar.note(f"{name}:{bad.lineno}: {bad.reason}")
                if len(report.bad_lines) == MAX_SHOWN:
                    bar.note(f"{name}: further bad lines are counted, not shown")
        elif on_bad is not None:
            on_bad(bad)

    parser = LineParser(settings)
    topics = {kind: settings.topic(kind.value) for kind in _KINDS.values()}
    by_kind = dict.fromkeys(_KINDS, 0)
    started = time.monotonic()
    unsent = 0
    base = (producer.sent, producer.failed) if producer is not None else (0, 0)
    try:
        now = time.time()
        for lineno, line, position in _lines(handle):
            if not line.strip():
                continue
            report.lines += 1
            if report.lines % yield_every == 0:
                now = time.time()  # the future check needs a clock, not a fresh one per line
                await asyncio.sleep(0)  # let the producer's sender task run
            try:
                parsed = parser.parse(line, now)
            except InvalidEvent as exc:
                report.bad += 1
                report_bad(BadLine(lineno, exc.reason))
                bar.update(0, position)
                continue
            report.valid += 1
            by_kind[parsed.kind.value] += 1
            if producer is not None:
                try:
                    await producer.send_raw(topics[parsed.kind], parsed.key, parsed.value)
                except Exception as exc:  # e.g. a message too large: that line is not sent
                    unsent += 1
                    report_bad(BadLine(lineno, f"not sent: {type(exc).__name__}: {exc}"))
            bar.update(1, position)
        if producer is not None:
            await producer.flush()
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    report.seconds = time.monotonic() - started
    if producer is not None:
        # EventProducer counts deliveries in done-callbacks: let the last ones run.
        deadline = time.monotonic() + 2.0
        while _delivered(producer, base) + unsent < report.valid:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        report.sent = producer.sent - base[0]
        report.failed = report.valid - report.sent  # whatever was not confirmed
    report.by_kind = {k: n for k, n in by_kind.items() if n}
    bar.close()
    return report


def _delivered(producer: Sender, base: tuple[int, int]) -> int:
    """Deliveries settled (either way) since the replay started."""
    return producer.sent - base[0] + producer.failed - base[1]


def _open(path: Path | str) -> tuple[IO[bytes], float | None]:
    if str(path) == "-":
        return sys.stdin.buffer, None
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed by replay()
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        total: float | None = float(Path(path).stat().st_size)
    except OSError:
        total = None
    return handle, total


def run_replay(
    settings: Settings,
    path: str,
    *,
    progress: bool = True,
    dry_run: bool = False,
    create: bool = False,
    broker_wait: float = 30.0,
) -> int:
    """The CLI: check the file, the broker and the topics, replay, print the summary; the
    exit code. A missing file is said at once, not after the broker wait."""
    if path != "-":
        _open(path)[0].close()

    async def run() -> ReplayReport:
        if not dry_run:
            from streamproc.kafka.topics import check_topics, create_topics, wait_for_broker

            await wait_for_broker(settings, timeout=broker_wait)
            if create:
                await create_topics(settings)
            # Producing to a missing topic would make the broker create it with its default
            # partition count, and the worker would then refuse to start.
            await check_topics(settings)
        return await replay(settings, path, progress=progress, dry_run=dry_run)

    report = asyncio.run(run())
    sys.stderr.write(report.summary() + "\n")
    return report.exit_code
