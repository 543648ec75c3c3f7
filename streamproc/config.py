"""Settings: the only reader of the environment (prefix ``STREAMPROC_`` or a ``.env`` file),
and the only writer of it for the child processes the command line starts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pydantic_settings
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamproc.business_hours import BusinessHours, check_zone
from streamproc.exceptions import SettingsError

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
    redis_url: str | None = None
    """STREAMPROC_REDIS_URL: ``redis://host:port/db``; unset, the worker runs without Redis."""
    web_port: int = Field(default=6066, ge=1, le=65535)
    """STREAMPROC_WEB_PORT: the worker's HTTP port (/metrics, /kpis, /healthz, /readyz)."""
    web_host: str = "127.0.0.1"
    """STREAMPROC_WEB_HOST: the address the web server binds and other workers reach."""
    data_dir: Path = Path("data")
    """STREAMPROC_DATA_DIR: the worker's own directory (one per worker, kept between
    restarts): a copy of its tables' changelogs on disk, so a restart reads only the tail."""
    app_id: str = Field(default="streamproc", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    """STREAMPROC_APP_ID: consumer group and prefix of the internal topics."""
    topic_prefix: str = Field(default="sales.", pattern=r"^[A-Za-z0-9._-]{0,100}$")
    """STREAMPROC_TOPIC_PREFIX: prefix of every input and output topic."""
    partitions: int = Field(default=4, ge=1, le=1024)
    """STREAMPROC_PARTITIONS: partitions of every topic (co-partitioned)."""
    timezone: str = "UTC"
    """STREAMPROC_TIMEZONE: IANA zone whose midnight starts the ``today`` window."""
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
    """``STREAMPROC_X: what is wrong``, with the key inside a JSON setting when it is one."""
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
        env[f"STREAMPROC_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env
