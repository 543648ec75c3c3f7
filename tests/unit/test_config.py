"""Settings from the environment: list and JSON parsing, and one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import DEFAULT_STAGES, Settings, child_env, load_settings
from streamproc.exceptions import SettingsError


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ``.env`` exists, so only the variables a test sets count."""
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.broker_url == "kafka://127.0.0.1:9092"
    assert settings.stages == DEFAULT_STAGES
    assert settings.topic("lead-created") == "sales.lead-created"


@pytest.mark.parametrize(
    "raw",
    ["new, contacted ,demo,won,lost", '["new", "contacted", "demo", "won", "lost"]'],
)
def test_stages_from_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("STREAMPROC_STAGES", raw)
    assert load_settings().stages == ("new", "contacted", "demo", "won", "lost")


def test_json_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_SLA_SOURCE_OVERRIDES", '{"referral": 120}')
    monkeypatch.setenv("STREAMPROC_ACTIVITY_TARGETS", '{"rep-1": 60, "rep-2": 45.5}')
    monkeypatch.setenv("STREAMPROC_STAGE_PROBABILITIES", '{"proposal": 0.4}')
    settings = load_settings()
    assert settings.sla_for("referral") == 120
    assert settings.sla_for("web") == settings.response_sla_seconds
    assert settings.activity_targets == {"rep-1": 60, "rep-2": 45.5}
    assert settings.default_probability("proposal") == 0.4


def test_scalars_and_broker_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_BROKER_URL", "kafka://k1:9092;k2:9093")
    monkeypatch.setenv("STREAMPROC_WEB_PORT", "7070")
    monkeypatch.setenv("STREAMPROC_TOPIC_PREFIX", "crm.")
    monkeypatch.setenv("STREAMPROC_TIMEZONE", "Europe/Paris")
    settings = load_settings()
    assert settings.broker_hosts == "k1:9092,k2:9093"
    assert settings.web_port == 7070
    assert settings.topic("alerts") == "crm.alerts"
    assert settings.zone.key == "Europe/Paris"


def test_dotenv_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STREAMPROC_PARTITIONS=8\n")
    assert load_settings().partitions == 8


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STREAMPROC_TIMEZONE", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("STREAMPROC_WEB_PORT", "abc", "integer"),
        ("STREAMPROC_WEB_PORT", "70000", "65535"),
        ("STREAMPROC_BROKER_URL", "http://x", "expected kafka://host:port"),
        ("STREAMPROC_REDIS_URL", "http://x", "expected redis://"),
        pytest.param(
            "STREAMPROC_SLA_SOURCE_OVERRIDES",
            "{not json",
            "STREAMPROC_SLA_SOURCE_OVERRIDES",
        ),
    ],
)
def test_a_bad_value_gives_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"bad setting {name}: ")
    assert says in message
    assert "\n" not in message


def test_producer_idempotence_is_asked_of_the_broker_when_set(tmp_path) -> None:
    from streamproc.kafka.app import create_app

    for wanted in (False, True):
        settings = Settings(_env_file=None, data_dir=tmp_path, producer_idempotence=wanted)
        extra = create_app(settings).producer._settings_extra()
        assert extra.get("enable_idempotence", False) is wanted
    create_app(Settings(_env_file=None, data_dir=tmp_path))  # back to the default transport


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        (
            "STREAMPROC_BUSINESS_HOURS",
            '{"*": {"dayz": "mon-fri"}}',
            "STREAMPROC_BUSINESS_HOURS: unknown key 'dayz' under '*' "
            "(the keys: days, open, close, timezone, holidays)",
        ),
        (
            "STREAMPROC_BUSINESS_HOURS",
            '{"north": {"open": "18:00", "close": "17:00"}}',
            "STREAMPROC_BUSINESS_HOURS: at 'north': close must be after open",
        ),
        (
            "STREAMPROC_SLA_SOURCE_OVERRIDES",
            '{"web": "fast"}',
            "STREAMPROC_SLA_SOURCE_OVERRIDES: at 'web': Input should be a valid number",
        ),
        (
            "STREAMPROC_STAGES",
            "new,won",
            "STREAMPROC_STAGES: at least 3 distinct stages, 'won' and 'lost' among them, "
            "got ['new', 'won']",
        ),
        ("STREAMPROC_WON_STAGE", "closed", "STREAMPROC_WON_STAGE: 'closed' is not one of"),
        (
            "STREAMPROC_STAGE_PROBABILITIES",
            '{"nope": 0.5}',
            "STREAMPROC_STAGE_PROBABILITIES: unknown stages ['nope']",
        ),
    ],
)
def test_a_bad_key_inside_a_json_setting_names_the_variable_and_the_key(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"bad setting {says}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (
            {"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            ["STREAMPROC_KAFKA_SASL_USERNAME", "STREAMPROC_KAFKA_SASL_PASSWORD", "SASL_SSL"],
        ),
        (
            {"STREAMPROC_KAFKA_SSL_CAFILE": "ca.pem"},
            ["STREAMPROC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT", "SSL or SASL_SSL"],
        ),
        (
            {"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL", "STREAMPROC_KAFKA_SSL_CERTFILE": "c"},
            ["STREAMPROC_KAFKA_SSL_CERTFILE and STREAMPROC_KAFKA_SSL_KEYFILE go together"],
        ),
        (
            {"STREAMPROC_REDIS_URL": "redis://r:6379/0", "STREAMPROC_REDIS_SSL_CAFILE": "ca"},
            ["STREAMPROC_REDIS_URL must be rediss://"],
        ),
        (
            {"STREAMPROC_WEB_AUTH_USERNAME": "prometheus"},
            ["STREAMPROC_WEB_AUTH_USERNAME and STREAMPROC_WEB_AUTH_PASSWORD go together"],
        ),
        (
            {"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL"},
            ["STREAMPROC_KAFKA_SECURITY_PROTOCOL", "'PLAINTEXT', 'SSL'"],
        ),
    ],
)
def test_security_settings_that_do_not_fit_together(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_secrets_are_hidden_but_reach_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMPROC_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("STREAMPROC_KAFKA_SASL_PASSWORD", "pw-kafka-1")
    monkeypatch.setenv("STREAMPROC_REDIS_PASSWORD", "pw-redis-2")
    monkeypatch.setenv("STREAMPROC_WEB_AUTH_TOKEN", "tok-3")
    settings = load_settings()
    for secret in ("pw-kafka-1", "pw-redis-2", "tok-3"):
        assert secret not in repr(settings) and secret not in str(settings.model_dump())
    env = child_env(settings)
    assert env["STREAMPROC_KAFKA_SASL_PASSWORD"] == "pw-kafka-1"
    assert env["STREAMPROC_REDIS_PASSWORD"] == "pw-redis-2"
    assert env["STREAMPROC_WEB_AUTH_TOKEN"] == "tok-3"
    assert env["STREAMPROC_KAFKA_SASL_USERNAME"] == "alice"
