"""The command line's help: plain text, every command listed, every option explained with
its default, the settings a command reads named; ``streamproc settings`` prints them all."""

from __future__ import annotations

import argparse

import pytest

from streamproc.cli import build_parser, main
from streamproc.config import Settings


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command's parser by its name, ``topics create`` included."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_commands(sub, f"{prefix}{name} "))
    return found


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--help"])
    assert caught.value.code == 0
    return capsys.readouterr().out


def test_the_top_help_is_plain_text_listing_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help([], capsys)
    assert "``" not in text
    for name in (
        "demo",
        "worker",
        "broker",
        "topics",
        "simulate",
        "replay",
        "bench",
        "schemas",
        "settings",
    ):
        assert f"\n    {name} " in text, name
    assert "streamproc settings" in text


def test_every_option_has_help_and_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(build_parser())
    assert {"demo", "worker", "topics create", "bench", "settings"} <= set(commands)
    for name, parser in commands.items():
        text = _help(name.split(), capsys)
        assert "``" not in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.dest}: no help"
            if action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), (
                    f"{name} {action.dest}: default not shown"
                )


@pytest.mark.parametrize("command", ["worker", "demo", "simulate", "replay", "topics create"])
def test_commands_that_read_settings_say_where_they_are(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(_help(command.split(), capsys).split())
    assert "STREAMPROC_*" in text and "`streamproc settings`" in text


def test_settings_prints_every_variable_and_marks_the_ones_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMPROC_PARTITIONS", "8")
    assert main(["settings"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in Settings.model_fields:
        assert any(f" STREAMPROC_{name.upper()}=" in line for line in lines), name
    assert "* STREAMPROC_PARTITIONS=8   (default: 4)" in lines
    assert "  STREAMPROC_WEB_PORT=6066   (default: 6066)" in lines


def test_settings_never_prints_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "Secret" in str(Settings.model_fields["kafka_sasl_password"].annotation)
    monkeypatch.setenv("STREAMPROC_KAFKA_SASL_PASSWORD", "hunter2-secret")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "* STREAMPROC_KAFKA_SASL_PASSWORD=**********" in out


class _NoProducer:
    """A producer that must not be used: a refused target sends nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a refused target must not reach the broker")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "0", "-3"])
def test_targets_set_refuses_a_non_finite_or_non_positive_value_in_one_line(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # nan/inf were once encoded as JSON null: a removal of the target, not a refusal
    monkeypatch.setattr("streamproc.tools.targets.producer", _NoProducer)
    argv = ["targets", "set", "--measure", "deals_won", "--period", "month", "--", value]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("streamproc: target refused, nothing changed: a target must be")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--measure", "revenue", "--period", "month", "5"], "unknown measure 'revenue'"),
        (["--measure", "deals_won", "--period", "fortnight", "5"], "unknown period 'fortnight'"),
        (["--measure", "deals_won", "--period", "month", "abc"], "must be a number, got 'abc'"),
    ],
)
def test_targets_set_refuses_a_bad_measure_period_or_number_in_one_line(
    args: list[str], why: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One clear line, not argparse's usage block (periods-and-targets.md)."""
    monkeypatch.setattr("streamproc.tools.targets.producer", _NoProducer)
    assert main(["targets", "set", *args]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("streamproc: target refused, nothing changed:") and why in line
