"""Settings as ``STREAMPROC_*`` variables, for the child processes the CLI starts."""

from __future__ import annotations

import json
import os

from streamproc.config import Settings

__all__ = ["settings_env"]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This environment minus any ``STREAMPROC_*``, plus exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"STREAMPROC_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env
