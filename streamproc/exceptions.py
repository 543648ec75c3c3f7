"""The errors streamproc raises on purpose."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnreachable",
    "InvalidEvent",
    "SettingsError",
    "StreamprocError",
    "TopicsError",
    "WebPortBusy",
]


class StreamprocError(Exception):
    """Base of every deliberate streamproc error."""


class SettingsError(StreamprocError):
    """A setting has a bad value: the message is one line naming it."""


class TopicsError(StreamprocError):
    """Topics are missing or not co-partitioned: the message names them and their counts."""


class InvalidEvent(StreamprocError):
    """An input message breaks the event contract; ``reason`` says how (for the dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerError(StreamprocError):
    """The embedded broker or proxy could not start: the message says why, in one line."""


class BrokerUnreachable(BrokerError, TimeoutError):
    """The configured broker did not answer within the allowed time."""


class WebPortBusy(StreamprocError):
    """The worker's HTTP port cannot be bound: the message names it and the setting."""
