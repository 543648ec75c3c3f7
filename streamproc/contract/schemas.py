"""JSON Schemas (draft 2020-12) of the events and outputs, generated from their pydantic models."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from streamproc.contract.events import (
    CloudEventEnvelope,
    ContactAttempted,
    CostRecorded,
    CustomerChurned,
    EmailOpened,
    LeadCreated,
    NpsResponded,
    StageChanged,
)
from streamproc.contract.outputs import Alert, DeadLetter, MetricMessage

__all__ = ["DIALECT", "SCHEMA_FILES", "schema_of", "write_schemas"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# File name -> (model, mode). Inputs are described as they are validated, outputs as they are
# written on the wire.
SCHEMA_FILES: Mapping[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "lead-created.schema.json": (LeadCreated, "validation"),
    "contact-attempted.schema.json": (ContactAttempted, "validation"),
    "stage-changed.schema.json": (StageChanged, "validation"),
    "email-opened.schema.json": (EmailOpened, "validation"),
    "cost-recorded.schema.json": (CostRecorded, "validation"),
    "customer-churned.schema.json": (CustomerChurned, "validation"),
    "nps-responded.schema.json": (NpsResponded, "validation"),
    "cloudevents-envelope.schema.json": (CloudEventEnvelope, "validation"),
    "metric-message.schema.json": (MetricMessage, "serialization"),
    "alert.schema.json": (Alert, "serialization"),
    "dead-letter.schema.json": (DeadLetter, "serialization"),
}


class _Draft202012(GenerateJsonSchema):
    """pydantic's generator, naming its dialect and without ``default: null`` on optional fields."""

    def generate(self, schema: core_schema.CoreSchema, mode: JsonSchemaMode = "validation") -> Any:
        out = super().generate(schema, mode=mode)
        out["$schema"] = DIALECT
        return out

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        # An optional field left out is None in Python, but null itself is invalid on the wire:
        # a "default": null would contradict the field's type.
        if "default" in schema and schema["default"] is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def schema_of(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
    """The JSON Schema of one model, with ``$schema``."""
    return model.model_json_schema(schema_generator=_Draft202012, mode=mode)


def _render(schema: Any) -> str:
    # Stable text: sorted keys, two-space indent, a final newline, so the files diff cleanly.
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write every schema into ``out_dir`` (created if needed) and return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, mode) in SCHEMA_FILES.items():
        path = out_dir / name
        path.write_text(_render(schema_of(model, mode)), encoding="utf-8", newline="\n")
        written.append(path)
    return written


if __name__ == "__main__":
    write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas"))
