"""A tiny progress bar for long CLI runs (replay, bench): rate and ETA on stderr, no dependency."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 24


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short and sortable by eye."""
    seconds = max(0, int(seconds + 0.5))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(n: float) -> str:
    """``950``, ``12.3k``, ``1.25M``."""
    if n < 1000:
        return f"{n:.0f}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


class Progress:
    """Counts items and tracks a position out of a known total (bytes read, events sent...).

    On a terminal the bar is redrawn in place at most every ``interval`` seconds; elsewhere
    (a log file, CI) a plain line is written every ``log_every`` seconds instead. ``note``
    writes a line above the bar without garbling it; notes are written even when the bar
    is disabled (``enabled=False``), which draws nothing.
    """

    def __init__(
        self,
        total: float | None,
        *,
        unit: str = "events",
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.2,
        log_every: float = 5.0,
        label: str = "",
    ) -> None:
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.label = label
        self.count = 0
        self.position = 0.0
        self.started = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._every = interval if self._tty else log_every
        self._next = self.started + self._every
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Items per second since the start."""
        elapsed = self.elapsed
        return self.count / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left, from the position's share of the total; None while unknown."""
        if self.total is None or self.position <= 0:
            return None
        done = min(1.0, self.position / self.total)
        return self.elapsed * (1.0 - done) / done

    def update(self, count: int = 1, position: float | None = None) -> None:
        """Add ``count`` items; ``position`` (absolute, in units of ``total``) drives the ETA.

        Without a position, the count itself is the position.
        """
        self.count += count
        self.position = float(self.count) if position is None else position
        if self.enabled and time.monotonic() >= self._next:
            self._draw()

    def note(self, line: str) -> None:
        """Write one line above the bar (a warning, a bad input line)."""
        if self._drawn and self._tty:
            self.stream.write("\r\x1b[2K")
        self.stream.write(line.rstrip("\n") + "\n")
        if self._tty and self._drawn and self.enabled:
            self._draw()
        else:
            self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        self._draw()
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def render(self) -> str:
        """The bar as text: ``label [#####-----] 52% 520.0k events 61.2k/s ETA 8s``."""
        parts = [self.label] if self.label else []
        if self.total is not None:
            share = min(1.0, self.position / self.total)
            filled = int(share * _BAR_WIDTH)
            parts.append(f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {share * 100:3.0f}%")
        parts.append(f"{_count(self.count)} {self.unit}")
        parts.append(f"{_count(self.rate)}/s")
        eta = self.eta()
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}" if eta > 0 else f"in {_duration(self.elapsed)}")
        else:
            parts.append(_duration(self.elapsed))
        return " ".join(parts)

    def _draw(self) -> None:
        self._next = time.monotonic() + self._every
        text = self.render()
        if self._tty:
            self.stream.write(f"\r\x1b[2K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = True
