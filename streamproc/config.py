"""Settings: the only reader of the environment (prefix ``STREAMPROC_`` or a ``.env`` file),
and the only writer of it for the child processes the command line starts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamproc.business_hours import BusinessHours, check_zone
from streamproc.exceptions import SettingsError

# How producers map a key to a partition (``contract.partitioning``).
Partitioner = Literal["crc32", "murmur2"]

__all__ = [
    "DEFAULT_STAGES",
    "DEFAULT_STAGE_PROBABILITIES",
    "Settings",
    "child_env",
    "load_settings",
]

DEFAULT_STAGES = ("new", "contacted", "qualified", "proposal", "negotiation", "won", "lost")
DEFAULT_STAGE_PROBABILITIES = {
    "new": 0.05,
    "contacted": 0.10,
    "qualified": 0.25,
    "proposal": 0.50,
    "negotiation": 0.75,
    "won": 1.0,
    "lost": 0.0,
}


def _comma_list(value: Any) -> Any:
    """Accept ``a,b,c`` as well as a JSON list for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of a worker, validated once at start-up and then frozen."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMPROC_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    broker_url: str = "kafka://127.0.0.1:9092"
    """STREAMPROC_BROKER_URL: ``kafka://host:port`` (several: ``kafka://h1:p1;h2:p2``)."""
    producer_idempotence: bool = False
    """STREAMPROC_PRODUCER_IDEMPOTENCE: ``true`` on real Kafka: the broker drops a produce
    request retried across a connection cut (no repeated alert). tansu does not support it."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """STREAMPROC_KAFKA_SECURITY_PROTOCOL: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or
    ``SASL_SSL``, as Kafka's ``security.protocol``; applies to every Kafka client."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """STREAMPROC_KAFKA_SASL_MECHANISM: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``
    (with a ``SASL_*`` protocol)."""
    kafka_sasl_username: str | None = None
    """STREAMPROC_KAFKA_SASL_USERNAME: the SASL user (Confluent Cloud: the API key)."""
    kafka_sasl_password: SecretStr | None = None
    """STREAMPROC_KAFKA_SASL_PASSWORD: the SASL password (Confluent Cloud: the API secret);
    never logged, shown as ``**********``."""
    kafka_ssl_cafile: Path | None = None
    """STREAMPROC_KAFKA_SSL_CAFILE: PEM file of the CAs that signed the brokers' certificates;
    unset, the system's CAs (enough for Confluent Cloud and MSK)."""
    kafka_ssl_certfile: Path | None = None
    """STREAMPROC_KAFKA_SSL_CERTFILE: PEM client certificate, for mutual TLS (with the key)."""
    kafka_ssl_keyfile: Path | None = None
    """STREAMPROC_KAFKA_SSL_KEYFILE: PEM private key of the client certificate."""
    kafka_ssl_key_password: SecretStr | None = None
    """STREAMPROC_KAFKA_SSL_KEY_PASSWORD: the password of an encrypted key file."""
    kafka_ssl_check_hostname: bool = True
    """STREAMPROC_KAFKA_SSL_CHECK_HOSTNAME: ``false`` accepts a broker certificate issued to
    another name (still signed by a trusted CA): for brokers reached by IP or a tunnel."""
    kafka_replication_factor: int = Field(default=1, ge=1, le=32)
    """STREAMPROC_KAFKA_REPLICATION_FACTOR: replicas of the topics streamproc creates (its own
    and Faust's changelogs); 3 on a managed cluster (Confluent Cloud requires it)."""
    redis_url: str | None = None
    """STREAMPROC_REDIS_URL: ``redis://host:port/db``, ``rediss://`` for TLS; unset, the worker
    runs without Redis."""
    redis_username: str | None = None
    """STREAMPROC_REDIS_USERNAME: the Redis ACL user (unset: the URL's, else ``default``)."""
    redis_password: SecretStr | None = None
    """STREAMPROC_REDIS_PASSWORD: the Redis password (instead of one in the URL, which would
    show wherever the URL does); never logged."""
    redis_ssl_cafile: Path | None = None
    """STREAMPROC_REDIS_SSL_CAFILE: PEM CAs for a ``rediss://`` server; unset, the system's."""
    redis_ssl_certfile: Path | None = None
    """STREAMPROC_REDIS_SSL_CERTFILE: PEM client certificate for a Redis that asks for one."""
    redis_ssl_keyfile: Path | None = None
    """STREAMPROC_REDIS_SSL_KEYFILE: PEM private key of the Redis client certificate."""
    web_port: int = Field(default=6066, ge=1, le=65535)
    """STREAMPROC_WEB_PORT: the worker's HTTP port (/metrics, /kpis, /healthz, /readyz)."""
    web_host: str = "127.0.0.1"
    """STREAMPROC_WEB_HOST: the address the web server binds and other workers reach."""
    web_tls_certfile: Path | None = None
    """STREAMPROC_WEB_TLS_CERTFILE: PEM certificate (chain): the worker serves HTTPS."""
    web_tls_keyfile: Path | None = None
    """STREAMPROC_WEB_TLS_KEYFILE: PEM private key of the web certificate."""
    web_tls_cafile: Path | None = None
    """STREAMPROC_WEB_TLS_CAFILE: PEM CAs a worker trusts when it asks the other workers for
    their /kpis over HTTPS; unset, the system's."""
    web_auth_username: str | None = None
    """STREAMPROC_WEB_AUTH_USERNAME: with the password, HTTP basic auth on every path but
    /healthz (Prometheus: ``basic_auth`` in the scrape config)."""
    web_auth_password: SecretStr | None = None
    """STREAMPROC_WEB_AUTH_PASSWORD: the basic auth password; never logged."""
    web_auth_token: SecretStr | None = None
    """STREAMPROC_WEB_AUTH_TOKEN: a bearer token accepted on every path but /healthz
    (``Authorization: Bearer <token>``; Prometheus: ``authorization`` in the scrape config)."""
    data_dir: Path = Path("data")
    """STREAMPROC_DATA_DIR: the worker's own directory (one per worker, kept between
    restarts): a copy of its tables' changelogs on disk, so a restart reads only the tail."""
    standby_replicas: int = Field(default=1, ge=0, le=8)
    """STREAMPROC_STANDBY_REPLICAS: other workers that keep a warm copy of each partition's
    state on their disk (Faust's ``table_standby_replicas``): a partition moves to one of
    them after a stop or a crash with only the changelog's last records to read."""
    session_timeout_seconds: float = Field(default=6.0, ge=3.0, le=300.0)
    """STREAMPROC_SESSION_TIMEOUT_SECONDS: how long the consumer group waits for a worker
    that stopped heartbeating (four times a second) before its partitions move: a crashed
    worker's partitions wait this long. tansu also holds every group join for half of it
    (a rebalance after a SIGTERM or a start waited 5 s with 10 s); Kafka accepts 6 s and
    more by default (``group.min.session.timeout.ms``); the benchmark gives its workers on
    its embedded tansu 4 s unless this is set. A worker none of whose heartbeats the group
    answered for this less 1 s (frozen, cut off) writes nothing until it has rejoined
    (``kafka/lease.py``)."""
    app_id: str = Field(default="streamproc", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    """STREAMPROC_APP_ID: consumer group and prefix of the internal topics."""
    topic_prefix: str = Field(default="sales.", pattern=r"^[A-Za-z0-9._-]{0,100}$")
    """STREAMPROC_TOPIC_PREFIX: prefix of every input and output topic."""
    partitions: int = Field(default=4, ge=1, le=1024)
    """STREAMPROC_PARTITIONS: partitions of every topic (co-partitioned)."""
    keyless_partitioner: Partitioner = "crc32"
    """STREAMPROC_KEYLESS_PARTITIONER: ``crc32`` (librdkafka's default: confluent-kafka,
    kcat) or ``murmur2`` (Kafka's Java client, aiokafka): the partitioner your producers
    key the lead events with. A lead event without a key is re-published keyed by its
    ``lead_id`` to the partition that partitioner gives it, where its lead's other events
    are."""
    timezone: str = "UTC"
    """STREAMPROC_TIMEZONE: IANA zone whose midnight starts the ``today`` window (and the
    days and months of the calendar periods)."""
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12)
    """STREAMPROC_FISCAL_YEAR_START_MONTH: 1-12, the month fiscal years and quarters begin
    (4: quarters start in April, July, October and January)."""
    response_sla_seconds: float = Field(default=300.0, gt=0)
    """STREAMPROC_RESPONSE_SLA_SECONDS: first-contact SLA of a lead."""
    sla_source_overrides: dict[str, float] = Field(default_factory=dict)
    """STREAMPROC_SLA_SOURCE_OVERRIDES: JSON ``{"referral": 120}``, SLA seconds per source."""
    at_risk_fraction: float = Field(default=0.8, gt=0, lt=1)
    """STREAMPROC_AT_RISK_FRACTION: share of the SLA after which a waiting lead is at risk."""
    stages: Annotated[tuple[str, ...], NoDecode] = DEFAULT_STAGES
    """STREAMPROC_STAGES: pipeline stages in order, ``won`` and ``lost`` last (comma list)."""
    won_stage: str = "won"
    """STREAMPROC_WON_STAGE: the stage that closes a deal won."""
    lost_stage: str = "lost"
    """STREAMPROC_LOST_STAGE: the stage that closes a deal lost."""
    stage_probabilities: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_STAGE_PROBABILITIES)
    )
    """STREAMPROC_STAGE_PROBABILITIES: JSON, default win probability per stage."""
    business_hours: dict[str, BusinessHours] = Field(default_factory=dict)
    """STREAMPROC_BUSINESS_HOURS: JSON per team (``"*"``: every team), e.g. ``{"*": {"days":
    "mon-fri", "open": "09:00", "close": "17:00", "timezone": "Europe/Paris", "holidays":
    ["2026-12-25"]}}``; the SLA clock then runs only while the team is open."""
    alert_backfill_horizon_seconds: float = Field(default=900.0, ge=0)
    """STREAMPROC_ALERT_BACKFILL_HORIZON_SECONDS: a breach already older than this when its
    lead is first seen (a replay, a consumer catching up) is counted, not alerted."""
    alert_check_interval_seconds: float = Field(default=0.5, gt=0, le=1)
    """STREAMPROC_ALERT_CHECK_INTERVAL_SECONDS: how often the SLA watch looks for due alerts."""
    activity_targets: dict[str, float] = Field(default_factory=dict)
    """STREAMPROC_ACTIVITY_TARGETS: JSON ``{"rep-1": 60}``, daily contact attempts per rep."""
    open_lead_retention_days: float = Field(default=90.0, ge=7)
    """STREAMPROC_OPEN_LEAD_RETENTION_DAYS: a lead still waiting for its first contact or with
    an open deal is forgotten after this many days without an event (it leaves the live
    gauges); other leads go once their last event is past the 7-day windows."""
    lead_cache_size: int = Field(default=100_000, ge=100)
    """STREAMPROC_LEAD_CACHE_SIZE: leads kept in memory, the most recently used (~400 bytes
    each); the others are read from the data dir's disk copy at their next event. Memory
    then grows with this, not with every lead kept (1,000,000 leads were ~1 GiB without)."""
    prune_interval_seconds: float = Field(default=60.0, gt=0)
    """STREAMPROC_PRUNE_INTERVAL_SECONDS: how often the windows are pruned and leads past
    retention forgotten (their part of the calendar periods goes to the rollups)."""
    label_cap: int = Field(default=500, ge=2)
    """STREAMPROC_LABEL_CAP: distinct values per label before the rest fold into ``other``."""
    publish_interval_seconds: float = Field(default=1.0, gt=0)
    """STREAMPROC_PUBLISH_INTERVAL_SECONDS: coalescing interval of derived publications."""
    max_future_seconds: float = Field(default=300.0, ge=0)
    """STREAMPROC_MAX_FUTURE_SECONDS: how far ahead of the clock ``occurred_at`` may be."""
    batch_size: int = Field(default=2000, ge=1)
    """STREAMPROC_BATCH_SIZE: the most events applied (and records fetched) per batch."""
    batch_seconds: float = Field(default=0.05, gt=0)
    """STREAMPROC_BATCH_SECONDS: the longest wait to fill a batch of the partials topic
    (event batches are what one fetch brought)."""
    log_level: str = "info"
    """STREAMPROC_LOG_LEVEL: debug, info, warning or error."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)

    @field_validator("broker_url")
    @classmethod
    def _kafka_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("kafka", "aiokafka") or not parsed.netloc:
            raise ValueError(f"expected kafka://host:port, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if urlparse(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected redis://host:port/db, got {value!r}")
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"expected debug, info, warning or error, got {value!r}")
        return value.lower()

    @model_validator(mode="after")
    def _pipeline(self) -> Settings:
        # Each message starts with the variable to fix: load_settings shows it as is.
        if len(set(self.stages)) != len(self.stages) or len(self.stages) < 3:
            raise ValueError(
                f"STREAMPROC_STAGES: at least 3 distinct stages, {self.won_stage!r} and "
                f"{self.lost_stage!r} among them, got {list(self.stages)}"
            )
        for name, stage in (("WON", self.won_stage), ("LOST", self.lost_stage)):
            if stage not in self.stages:
                raise ValueError(
                    f"STREAMPROC_{name}_STAGE: {stage!r} is not one of STREAMPROC_STAGES "
                    f"{list(self.stages)}"
                )
        unknown = set(self.stage_probabilities) - set(self.stages)
        if unknown and "stage_probabilities" in self.model_fields_set:
            raise ValueError(
                f"STREAMPROC_STAGE_PROBABILITIES: unknown stages {sorted(unknown)} "
                f"(STREAMPROC_STAGES: {list(self.stages)})"
            )
        if any(not 0 <= p <= 1 for p in self.stage_probabilities.values()):
            raise ValueError("STREAMPROC_STAGE_PROBABILITIES: every probability must be 0-1")
        if any(s <= 0 for s in self.sla_source_overrides.values()):
            raise ValueError("STREAMPROC_SLA_SOURCE_OVERRIDES: every SLA must be > 0")
        problem = _security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    # Derived, read-only conveniences -------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def closed_stages(self) -> frozenset[str]:
        return frozenset((self.won_stage, self.lost_stage))

    def stage_rank(self, stage: str) -> int:
        """Position in the pipeline (won ranks above every open stage; unknown: -1)."""
        try:
            return self.stages.index(stage)
        except ValueError:
            return -1

    def default_probability(self, stage: str) -> float:
        if stage in self.stage_probabilities:
            return self.stage_probabilities[stage]
        return DEFAULT_STAGE_PROBABILITIES.get(stage, 0.0)

    def sla_for(self, source: str | None) -> float:
        if source is not None and source in self.sla_source_overrides:
            return self.sla_source_overrides[source]
        return self.response_sla_seconds

    def topic(self, name: str) -> str:
        """The full name of a topic, e.g. ``topic("lead-created")`` -> ``sales.lead-created``."""
        return f"{self.topic_prefix}{name}"

    @property
    def broker_hosts(self) -> str:
        """``host:port[,host:port]`` for clients that take bootstrap servers."""
        netloc = urlparse(self.broker_url).netloc
        return netloc.replace(";", ",")


def _security_problem(s: Settings) -> str | None:
    """The first inconsistent combination of the security settings, as one line that starts
    with the variable to change; None if they fit together."""
    protocol = s.kafka_security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    checks = [
        (
            sasl and not (s.kafka_sasl_username and s.kafka_sasl_password),
            f"STREAMPROC_KAFKA_SASL_USERNAME and STREAMPROC_KAFKA_SASL_PASSWORD are required "
            f"with STREAMPROC_KAFKA_SECURITY_PROTOCOL={protocol}",
        ),
        (
            not tls and any((s.kafka_ssl_cafile, s.kafka_ssl_certfile, s.kafka_ssl_keyfile)),
            f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS, yet "
            "STREAMPROC_KAFKA_SSL_CAFILE, _CERTFILE or _KEYFILE is set: set it to SSL or SASL_SSL",
        ),
        (
            (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None),
            "STREAMPROC_KAFKA_SSL_CERTFILE and STREAMPROC_KAFKA_SSL_KEYFILE go together",
        ),
        (
            (s.redis_ssl_certfile is None) != (s.redis_ssl_keyfile is None),
            "STREAMPROC_REDIS_SSL_CERTFILE and STREAMPROC_REDIS_SSL_KEYFILE go together",
        ),
        (
            any((s.redis_ssl_cafile, s.redis_ssl_certfile))
            and not (s.redis_url or "").startswith("rediss://"),
            "STREAMPROC_REDIS_URL must be rediss://... when STREAMPROC_REDIS_SSL_CAFILE or "
            "_CERTFILE is set",
        ),
        (
            (s.web_tls_certfile is None) != (s.web_tls_keyfile is None),
            "STREAMPROC_WEB_TLS_CERTFILE and STREAMPROC_WEB_TLS_KEYFILE go together",
        ),
        (
            (s.web_auth_username is None) != (s.web_auth_password is None),
            "STREAMPROC_WEB_AUTH_USERNAME and STREAMPROC_WEB_AUTH_PASSWORD go together",
        ),
    ]
    return next((message for failed, message in checks if failed), None)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation error into one line naming the setting."""
    try:
        return Settings(**overrides)
    except pydantic_settings.SettingsError as exc:
        # JSON settings are decoded before validation: "error parsing value for field "x" ..."
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        raise SettingsError(f"bad setting STREAMPROC_{field.upper()}: not valid JSON") from None
    except ValidationError as exc:
        raise SettingsError(f"bad setting {_one_line(exc.errors()[0])}") from None


def _one_line(err: Any) -> str:
    """``STREAMPROC_<NAME>: what is wrong``, with the key inside a JSON setting when it is one."""
    message = str(err["msg"]).removeprefix("Value error, ")
    loc = [str(part) for part in err.get("loc", ())]
    if not loc:  # a check across settings: its message names the variable first
        return message if message.startswith("STREAMPROC_") else f"settings: {message}"
    name = f"STREAMPROC_{loc[0].upper()}"
    keys = loc[1:]
    if err.get("type") == "extra_forbidden":
        allowed = ", ".join(_keys_of(loc[0]))
        where = f" under {_path(keys[:-1])}" if keys[:-1] else ""
        return f"{name}: unknown key {keys[-1]!r}{where} (the keys: {allowed})"
    return f"{name}: at {_path(keys)}: {message}" if keys else f"{name}: {message}"


def _path(keys: list[str]) -> str:
    return " > ".join(repr(key) for key in keys)


def _keys_of(field: str) -> list[str]:
    """The keys a JSON setting's objects take (only ``business_hours`` forbids others)."""
    return list(BusinessHours.model_fields) if field == "business_hours" else []


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment minus any ``STREAMPROC_*``, plus exactly ``settings`` (and
    ``extra``): for a child process (a worker the demo starts) that must see these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):  # dumped as "**********"
            value = secret.get_secret_value()
        env[f"STREAMPROC_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env
