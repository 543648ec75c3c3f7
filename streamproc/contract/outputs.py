"""What the processor publishes (spec/outputs.md): metric messages, alerts and dead letters."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["Alert", "AlertKind", "DeadLetter", "MetricMessage", "Window", "series_key"]

Window = Literal[
    "1h", "today", "7d", "month", "quarter", "year", "last_month", "last_quarter", "last_year"
]
AlertKind = Literal["response_sla_breached", "response_sla_resolved"]
Text = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

# Fixed namespace of alert ids: uuid5 of the same alert is the same id on every worker, forever.
_ALERT_NAMESPACE = uuid.UUID("6f1c2a9e-4d3b-5c7a-9e8f-0a1b2c3d4e5f")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_key(metric: str, labels: dict[str, str]) -> str:
    """Canonical ``metric{a="x",b="y"}`` (labels sorted, Prometheus escaping): a compaction key."""
    inner = ",".join(f'{name}="{_escape(labels[name])}"' for name in sorted(labels))
    return f"{metric}{{{inner}}}"


class _Output(BaseModel):
    # Built by the processor from Python values; unknown fields are ignored so that a
    # subscriber parsing with these models survives a field added later.
    model_config = ConfigDict(frozen=True, extra="ignore")


class MetricMessage(_Output):
    """One value of one KPI series, on a compacted metric topic keyed by the series."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"window": {"type": "null"}}},
            "then": {
                "properties": {"window_start": {"type": "null"}, "window_end": {"type": "null"}}
            },
            "else": {
                "properties": {
                    "window_start": {"type": "string"},
                    "window_end": {"type": "string"},
                }
            },
        }
    )

    metric: Text = Field(description="The metric name, e.g. sales_connect_ratio.")
    labels: dict[str, str] = Field(description="The series' labels, without window.")
    window: Window | None = Field(description="The window; null for a live gauge.")
    window_start: AwareDatetime | None = Field(description="RFC 3339; null for a live gauge.")
    window_end: AwareDatetime | None = Field(description="RFC 3339; null for a live gauge.")
    value: Finite = Field(description="In base units (seconds, currency); ratios 0-1.")
    final: bool = Field(
        description=(
            "True once the window is over: the last value of a window that ended, and every"
            " value of a last_* window (a late event of a lead still kept may correct it)."
        )
    )
    emitted_at: AwareDatetime = Field(description="When the worker published it, RFC 3339.")

    @model_validator(mode="after")
    def _window_bounds(self) -> MetricMessage:
        bounds = (self.window_start, self.window_end)
        if self.window is None:
            if bounds != (None, None) or self.final:
                raise ValueError("a live gauge (window null) has no bounds and is never final")
        elif self.window_start is None or self.window_end is None:
            raise ValueError("a windowed value needs window_start and window_end")
        elif self.window_start >= self.window_end:
            raise ValueError("window_start must be before window_end")
        return self

    @property
    def key(self) -> str:
        """The Kafka key: the series, canonical, so that compaction keeps its latest value."""
        if self.window is None:
            return series_key(self.metric, self.labels)
        return series_key(self.metric, {**self.labels, "window": self.window})


class Alert(_Output):
    """A live response-time alert, on ``sales.alerts`` keyed by ``lead_id``."""

    alert_id: Text = Field(description="Deterministic: the same alert always has the same id.")
    kind: AlertKind
    level: Literal[1, 2] = Field(
        description="1: SLA passed; 2: twice the SLA. A resolution carries the level it resolves."
    )
    lead_id: Text
    rep_id: Text
    team_id: Text
    source: Text
    lead_created_at: AwareDatetime
    sla_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    waited_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    fired_at: AwareDatetime

    @staticmethod
    def make_id(kind: AlertKind, level: int, lead_id: str) -> str:
        """The deterministic id of an alert: a repeat after a crash carries the same one."""
        return str(uuid.uuid5(_ALERT_NAMESPACE, f"{kind}\x1f{level}\x1f{lead_id}"))


class DeadLetter(_Output):
    """An invalid input message with why it was rejected, on ``sales.dead-letter``."""

    reason: str = Field(description="Why the message is invalid, one line.")
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key: str | None = Field(description="The key as UTF-8 (invalid bytes backslash-escaped).")
    timestamp: int | None = Field(description="The message's timestamp, epoch milliseconds.")
    raw: str = Field(description="The value: as is when UTF-8, else base64.")
    raw_encoding: Literal["utf-8", "base64"]

    @classmethod
    def from_raw(
        cls,
        *,
        reason: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None,
    ) -> DeadLetter:
        """Keep the bytes readable when they are text, lossless when they are not."""
        data = bytes(value or b"")
        encoding: Literal["utf-8", "base64"]
        try:
            raw, encoding = data.decode(), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(data).decode("ascii"), "base64"
        return cls(
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else bytes(key).decode(errors="backslashreplace"),
            timestamp=timestamp_ms,
            raw=raw,
            raw_encoding=encoding,
        )
