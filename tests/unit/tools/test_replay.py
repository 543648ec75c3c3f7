"""``streamproc replay``: line forms, bad lines with their numbers, exit codes (no broker)."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc.cli import main
from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.exceptions import InvalidEvent
from streamproc.tools.net import free_port
from streamproc.tools.progress import Progress
from streamproc.tools.replay import LineParser, replay

NOW = 1_790_000_000.0
AT = "2026-09-21T10:00:00Z"  # before NOW: never "in the future"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture
def parser(settings: Settings) -> LineParser:
    return LineParser(settings)


def created(lead: str = "L-1", **extra: Any) -> dict[str, Any]:
    event = {
        "event_id": f"e-{lead}",
        "occurred_at": AT,
        "lead_id": lead,
        "rep_id": "rep-1",
        "source": "website",
    }
    return {**event, **extra}


def attempted(lead: str = "L-1") -> dict[str, Any]:
    return {
        "event_id": f"a-{lead}",
        "occurred_at": AT,
        "lead_id": lead,
        "rep_id": "rep-1",
        "channel": "call",
        "connected": True,
    }


def line(obj: Any) -> bytes:
    return orjson.dumps(obj)


class FakeProducer:
    """What replay needs of EventProducer: send_raw, flush and the delivery counters."""

    def __init__(self, fail_every: int = 0) -> None:
        self.sent = 0
        self.failed = 0
        self.messages: list[tuple[str, bytes | None, bytes | None]] = []
        self.fail_every = fail_every

    async def send_raw(
        self, topic: str, key: str | bytes | None, value: bytes | None
    ) -> asyncio.Future[Any]:
        if isinstance(key, str):
            key = key.encode()
        self.messages.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_every and len(self.messages) % self.fail_every == 0:
            self.failed += 1
            future.set_exception(RuntimeError("broker said no"))
            future.exception()  # retrieved: no "never retrieved" warning
        else:
            self.sent += 1
            future.set_result(None)
        return future

    async def flush(self) -> None:
        return None


# --- the line forms ----------------------------------------------------------------------------


def test_wrapped_form(parser: LineParser) -> None:
    parsed = parser.parse(line({"type": "lead-created", "event": created()}), NOW)
    assert parsed.kind is EventKind.LEAD_CREATED
    assert parsed.key == b"L-1"
    assert orjson.loads(parsed.value) == created()


def test_wrapped_form_with_kind_field(parser: LineParser) -> None:
    parsed = parser.parse(line({"kind": "contact-attempted", "event": attempted()}), NOW)
    assert parsed.kind is EventKind.CONTACT_ATTEMPTED


def test_flat_form_drops_the_type_field(parser: LineParser) -> None:
    parsed = parser.parse(line({"type": "lead-created", **created()}), NOW)
    assert parsed.kind is EventKind.LEAD_CREATED
    assert orjson.loads(parsed.value) == created()  # no "type" left in the event


def test_flat_form_with_kind_field(parser: LineParser) -> None:
    parsed = parser.parse(line({**attempted(), "kind": "contact-attempted"}), NOW)
    assert parsed.kind is EventKind.CONTACT_ATTEMPTED
    assert "kind" not in orjson.loads(parsed.value)


@pytest.mark.parametrize(
    "name",
    ["lead-created", "lead_created", "LEAD-CREATED", " lead-created ", "sales.lead-created"],
)
def test_type_spellings(parser: LineParser, name: str) -> None:
    assert parser.parse(line({"type": name, "event": created()}), NOW).kind is (
        EventKind.LEAD_CREATED
    )


def test_cloudevents_envelope_wrapped_and_flat(parser: LineParser) -> None:
    data = created()
    del data["event_id"], data["occurred_at"]
    envelope = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "crm",
        "type": "com.acme.crm.lead-created",
        "time": AT,
        "data": data,
    }
    wrapped = parser.parse(line({"type": "lead-created", "event": envelope}), NOW)
    flat = parser.parse(line(envelope), NOW)
    for parsed in (wrapped, flat):
        assert parsed.kind is EventKind.LEAD_CREATED
        assert parsed.key == b"L-1"  # the key comes from data.lead_id
        assert orjson.loads(parsed.value)["specversion"] == "1.0"  # sent as it came


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (line(created()), 'no event type: expected a "type" or "kind" field'),
        (line({"event": created()}), 'no event type: expected a "type" or "kind" next to'),
        (line({"type": "lead-updated", "event": created()}), "unknown event type 'lead-updated'"),
        (line({"type": 7, "event": created()}), "event type must be a string"),
        (line({"type": "lead-created", "event": [1]}), '"event" must be a JSON object'),
        (line({"type": "lead-created", "event": created(source=None)}), "source"),
        (
            line({"type": "contact-attempted", "event": created()}),
            "missing field channel",
        ),
        (
            line({"type": "lead-created", "event": created(occurred_at="2099-01-01T00:00:00Z")}),
            "in the future",
        ),
    ],
)
def test_bad_lines_say_why(parser: LineParser, text: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parser.parse(text, NOW)
    assert reason in info.value.reason


def test_worker_parser_rules_apply(parser: LineParser) -> None:
    """The worker's own rules: an email attempt needs a message_id, a stage must exist."""
    email = {**attempted(), "channel": "email"}
    with pytest.raises(InvalidEvent, match="message_id is required"):
        parser.parse(line({"type": "contact-attempted", "event": email}), NOW)
    stage = {**attempted(), "to_stage": "limbo"}
    del stage["channel"], stage["connected"]
    with pytest.raises(InvalidEvent, match="limbo"):
        parser.parse(line({"type": "stage-changed", "event": stage}), NOW)


# --- whole files ---------------------------------------------------------------------------


def write_lines(path: Path, lines: list[bytes | str]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_replay_sends_good_lines_and_reports_bad_ones_by_number(
    settings: Settings, tmp_path: Path
) -> None:
    path = write_lines(
        tmp_path / "history.jsonl",
        [
            line({"type": "lead-created", "event": created("L-1")}),  # 1
            "",  # 2: blank, skipped
            b"{oops",  # 3
            line({"type": "contact-attempted", **attempted("L-1")}),  # 4
            line({"type": "lead-created", "event": created("L-2", rep_id="")}),  # 5
            line({"type": "lead-created", "event": created("L-3")}),  # 6
        ],
    )
    producer = FakeProducer()
    report = asyncio.run(replay(settings, path, producer=producer, progress=False))  # type: ignore[arg-type]
    assert [(b.lineno, b.reason.split(":")[0]) for b in report.bad_lines] == [
        (3, "not JSON"),
        (5, "rep_id must not be empty"),
    ]
    assert (report.lines, report.valid, report.bad, report.sent, report.failed) == (5, 3, 2, 3, 0)
    assert report.exit_code == 1
    assert [(t, k) for t, k, _ in producer.messages] == [
        ("sales.lead-created", b"L-1"),
        ("sales.contact-attempted", b"L-1"),
        ("sales.lead-created", b"L-3"),
    ]
    assert report.by_kind == {"contact-attempted": 1, "lead-created": 2}


def test_replay_all_good_exits_0(settings: Settings, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "ok.jsonl",
        [line({"type": "lead-created", "event": created(f"L-{i}")}) for i in range(50)],
    )
    report = asyncio.run(replay(settings, path, producer=FakeProducer(), progress=False))  # type: ignore[arg-type]
    assert (report.sent, report.bad, report.exit_code) == (50, 0, 0)


def test_undelivered_events_make_exit_1(settings: Settings, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "ok.jsonl",
        [line({"type": "lead-created", "event": created(f"L-{i}")}) for i in range(10)],
    )
    report = asyncio.run(
        replay(settings, path, producer=FakeProducer(fail_every=5), progress=False)  # type: ignore[arg-type]
    )
    assert (report.valid, report.sent, report.failed, report.exit_code) == (10, 8, 2, 1)


def test_bad_lines_are_printed_above_the_progress(settings: Settings, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "h.jsonl",
        [line({"type": "lead-created", "event": created()}), b"[]", b"{"],
    )
    err = io.StringIO()
    asyncio.run(replay(settings, path, producer=FakeProducer(), stream=err))  # type: ignore[arg-type]
    text = err.getvalue()
    assert f"{path}:2: not a JSON object" in text
    assert f"{path}:3: not JSON" in text
    assert "replay [" in text  # the bar's final line


# --- the command line ----------------------------------------------------------------------


def test_cli_dry_run_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_lines(
        tmp_path / "good.jsonl", [line({"type": "lead-created", "event": created()})]
    )
    bad = write_lines(
        tmp_path / "bad.jsonl",
        [line({"type": "lead-created", "event": created()}), b'{"type": "nope", "event": {}}'],
    )
    assert main(["replay", "--dry-run", "--no-progress", str(good)]) == 0
    assert "1 events validated (dry run)" in capsys.readouterr().err
    assert main(["replay", "--dry-run", "--no-progress", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: unknown event type 'nope'" in err
    assert "1 bad" in err


def test_cli_missing_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--dry-run", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    missing = tmp_path / "missing.jsonl"
    assert err == [f"streamproc: cannot read {missing}: No such file or directory"]


def test_cli_missing_file_is_said_before_waiting_for_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no broker listens there: the replay used to retry for 30 s, then blame the broker
    monkeypatch.setenv("STREAMPROC_BROKER_URL", f"kafka://127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert time.monotonic() - started < 10  # not the 30 s broker wait
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"streamproc: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    ]


# --- the progress bar ----------------------------------------------------------------------


def test_progress_rate_and_eta() -> None:
    out = io.StringIO()
    bar = Progress(1000, stream=out, label="replay")
    bar.started -= 10.0  # ten seconds in
    bar.update(250, position=250)
    text = bar.render()
    assert text.startswith("replay [######")
    assert " 25%" in text and "250 events" in text and "25/s" in text and "ETA 30s" in text
    bar.close()
    assert "replay" in out.getvalue()  # not a tty: plain lines


def test_progress_disabled_draws_no_bar_but_keeps_notes() -> None:
    out = io.StringIO()
    bar = Progress(10, stream=out, enabled=False)
    bar.started -= 60.0
    bar.update(5)
    bar.note("line 1: bad")
    bar.close()
    assert out.getvalue() == "line 1: bad\n"


def test_business_events_replay_keyed_by_customer_or_event(parser: LineParser) -> None:
    churn = {"event_id": "c-1", "occurred_at": AT, "customer_id": "C-9", "reason": "price"}
    cost = {"event_id": "k-1", "occurred_at": AT, "amount": 120, "category": "marketing"}
    nps = {"event_id": "n-1", "occurred_at": AT, "customer_id": "C-9", "score": 9}
    got = [
        parser.parse(orjson.dumps({"type": "customer-churned", "event": churn}), NOW),
        parser.parse(orjson.dumps({"type": "cost_recorded", **cost}), NOW),
        parser.parse(orjson.dumps({"kind": "sales.nps-responded", "event": nps}), NOW),
    ]
    assert [(p.kind.value, p.key) for p in got] == [
        ("customer-churned", b"C-9"),
        ("cost-recorded", b"k-1"),
        ("nps-responded", b"C-9"),
    ]
    with pytest.raises(InvalidEvent, match="score must be <= 10"):
        parser.parse(orjson.dumps({"type": "nps-responded", "event": nps | {"score": 11}}), NOW)
