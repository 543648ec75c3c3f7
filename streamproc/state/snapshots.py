"""Aggregates snapshots: what a worker stopping cleanly leaves in its data dir, so that its
restart loads each partition's aggregates instead of deriving them from every lead (~12 s
of a 16 s restart at 100,000 leads), and the SLA deadlines of its waiting leads instead of
reading every lead for them (~0.9 s at 100,000 leads, in-process).

A snapshot is ``<data_dir>/snapshots/p<N>``, written to a temporary file and renamed
(atomic); the same bytes also go to the broker (``kafka.snapshot_topic``), for a worker
that takes the partition over without this data dir. It records the disk marks
(``state.disk.Mark``) of the changelog partitions the aggregates derive from (leads with
their rollups, customers), the settings the facts depend on and a format version. It is
used only if all three are the same at the restart, after the changelog catch-up: nothing
was written to those partitions since, so the aggregates are what a rebuild from them
would give. The marks hold the digest of the changelog's last record, so they compare as
well between two workers' copies of one changelog. Read once: the file is deleted when
read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from streamproc import __version__
from streamproc.config import Settings
from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.sla_watch import Deadline
from streamproc.engine.snapshot import (
    SnapshotError,
    deadlines,
    decode,
    encode,
    read_head,
    read_meta,
)
from streamproc.engine.windows import WindowClock
from streamproc.state.disk import Mark

__all__ = ["VERSION", "Decoded", "Snapshot", "Snapshots", "settings_fingerprint"]

log = logging.getLogger(__name__)
# Of the format; a snapshot of another version is not read. 2: with the SLA deadlines; 3:
# with the writer's byte order (its arrays are native: a snapshot from the broker may come
# from another machine); 4: a deal is won once (a repeated won event counted again before,
# and a customer's "new customer" fact is gone): aggregates of version 3 are derived again;
# 5: a series' archived months are one level of arrays, as its kept months.
# 6: a level's buckets far ahead of now apart, sparse (a cost's shares of days to come).
# 7: a move to the stage a deal is in is no stage entry, exit or activity: aggregates of
# version 6 are derived again.
# 8: revenue by segment is a customer's fact (``customer_revenue``), no more a lead's.
# 9: a first contact is within the SLA on the alerts' clock (business hours): aggregates
# of version 8 are derived again (loaded as they are, a late earlier attempt retracted a
# fact the old rule never added).
VERSION = 9
# Settings that change no fact, window or aggregate: a restart, or another worker with its
# own address, credentials and cache, may differ in them and still use the snapshot (the
# marks tell another cluster). Every other setting must be the same.
_OPERATIONAL = frozenset(
    {
        "broker_url", "producer_idempotence", "kafka_security_protocol",
        "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password",
        "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
        "kafka_ssl_key_password", "kafka_ssl_check_hostname", "kafka_replication_factor",
        "lead_cache_size", "web_port", "web_host", "web_tls_certfile", "web_tls_keyfile",
        "web_tls_cafile",
        "web_auth_username", "web_auth_password", "web_auth_token", "data_dir",
        "standby_replicas", "session_timeout_seconds", "log_level", "batch_size",
        "batch_seconds", "publish_interval_seconds", "alert_check_interval_seconds",
        "prune_interval_seconds", "redis_url", "redis_username", "redis_password",
        "redis_ssl_cafile", "redis_ssl_certfile", "redis_ssl_keyfile",
    }
)  # fmt: skip
Marks = Mapping[str, Mark | None]  # changelog topic -> its partition's mark on disk


def settings_fingerprint(settings: Settings) -> str:
    """A digest of the package version and the settings facts depend on."""
    fields = set(type(settings).model_fields) - _OPERATIONAL
    dumped = settings.model_dump_json(include=fields)
    return hashlib.sha256(f"{__version__}\n{dumped}".encode()).hexdigest()


def _marks_out(marks: Marks) -> dict[str, Any]:
    return {
        t: None if m is None else [m.applied, m.checked, m.digest.hex()] for t, m in marks.items()
    }


class Snapshot(NamedTuple):
    """What a partition's snapshot holds."""

    aggregates: PartitionAggregates
    deadlines: list[Deadline]  # of its waiting leads (``AlertWatch.deadlines``)


class Decoded(NamedTuple):
    """A broker's snapshot decoded before the marks it must have been taken at are known
    (``Snapshots.decode_published``, while the group's join waits)."""

    data: bytes  # the snapshot decoded
    taken_at: Any  # its marks, as its head has them
    snapshot: Snapshot


class Snapshots:
    """The snapshots of one data dir."""

    def __init__(self, data_dir: Path, settings: Settings) -> None:
        self.dir = data_dir / "snapshots"
        self.fingerprint = settings_fingerprint(settings)

    def path(self, partition: int) -> Path:
        return self.dir / f"p{partition}"

    def write(
        self,
        partition: int,
        part: PartitionAggregates,
        marks: Marks,
        waiting: Iterable[Deadline] = (),
    ) -> bytes:
        """Write the partition's snapshot (``waiting``: the SLA deadlines of its leads);
        returns it, for the broker's copy."""
        meta = {
            "version": VERSION,
            "partition": partition,
            "settings": self.fingerprint,
            "marks": _marks_out(marks),
            "byteorder": sys.byteorder,
        }
        data = encode(part, meta, waiting)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(partition)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return data

    def take(
        self,
        partition: int,
        marks: Marks,
        clock: WindowClock,
        now: float,
        published: bytes | None = None,
        decoded: Decoded | None = None,
    ) -> Snapshot | None:
        """The partition's snapshot if it is there and was taken at ``marks`` with these
        settings (else None: rebuild); the file is deleted either way. ``published``: the
        broker's copy (``kafka.snapshot_topic``), tried when the data dir has none usable;
        ``decoded``: those bytes decoded ahead (``decode_published``)."""
        path = self.path(partition)
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        path.unlink(missing_ok=True)
        found = None if data is None else self._read(data, partition, marks, clock, now)
        if found is not None or published is None:
            return found
        if decoded is not None and decoded.data is published:
            if decoded.taken_at == _marks_json(marks):
                return decoded.snapshot
            log.info("partition %d: snapshot (the broker's) not used (%s)", partition, _MOVED)
            return None
        return self._read(published, partition, marks, clock, now, " (the broker's)")

    def decode_published(
        self, data: bytes, partition: int, clock: WindowClock, now: float, marks: Marks
    ) -> Decoded | None:
        """The broker's snapshot of ``partition`` decoded, for a ``take`` of the same bytes
        at the marks it was taken at; None if it cannot be used at any that may come after
        ``marks`` (the disk copy's now: marks only move on)."""
        try:
            why = self._unusable(read_head(data), partition, None) or _before(data, marks)
            if why:
                log.info("partition %d: snapshot (the broker's) not used (%s)", partition, why)
                return None
            meta, body, tail = read_meta(data)
            snapshot = Snapshot(decode(body, tail, clock, now), deadlines(body))
        except SnapshotError as exc:
            log.warning("partition %d: snapshot (the broker's) not used (%s)", partition, exc)
            return None
        return Decoded(data, meta.get("marks"), snapshot)

    def partitions(self) -> list[int]:
        """The partitions with a snapshot file."""
        names = (path.name for path in self.dir.glob("p*"))
        return sorted(int(name[1:]) for name in names if name[1:].isdigit())

    def peek(self, partition: int, marks: Marks, clock: WindowClock, now: float) -> Snapshot | None:
        """``take``'s snapshot of the data dir, read but not taken (the file stays)."""
        try:
            data = self.path(partition).read_bytes()
        except FileNotFoundError:
            return None
        return self._read(data, partition, marks, clock, now)

    def usable(self, partition: int, marks: Marks) -> bool:
        """Whether the data dir has a snapshot of the partition taken at ``marks`` with
        these settings (read, not taken)."""
        try:
            meta = read_head(self.path(partition).read_bytes())
        except (OSError, SnapshotError):
            return False
        return self._unusable(meta, partition, marks) is None

    def _read(
        self,
        data: bytes,
        partition: int,
        marks: Marks,
        clock: WindowClock,
        now: float,
        whose: str = "",
    ) -> Snapshot | None:
        try:
            meta, body, tail = read_meta(data)
            why = self._unusable(meta, partition, marks)
            if why:
                log.info("partition %d: snapshot%s not used (%s)", partition, whose, why)
                return None
            return Snapshot(decode(body, tail, clock, now), deadlines(body))
        except SnapshotError as exc:
            log.warning("partition %d: snapshot%s not used (%s)", partition, whose, exc)
            return None

    def _unusable(self, meta: dict[str, Any], partition: int, marks: Marks | None) -> str | None:
        """Why a snapshot with this head cannot be used (``marks`` None: at any marks)."""
        if meta.get("version") != VERSION:
            return f"format version {meta.get('version')}, not {VERSION}"
        if meta.get("partition") != partition:
            return "of another partition"
        if meta.get("settings") != self.fingerprint:
            return "other settings"
        if meta.get("byteorder") != sys.byteorder:
            return f"written on a {meta.get('byteorder')}-endian machine"
        if marks is not None and meta.get("marks") != _marks_json(marks):
            return _MOVED
        return None


_MOVED = "the changelog moved on since"


def _before(data: bytes, marks: Marks) -> str | None:
    """Why a snapshot was taken before ``marks`` (a disk copy already past it: a standby's
    of a partition whose owner stopped cleanly long ago), if it was."""
    taken_at = read_head(data).get("marks") or {}
    for topic, mark in marks.items():
        theirs = taken_at.get(topic)
        if mark is not None and (theirs is None or theirs[0] < mark.applied):
            return "taken before this worker's copy of the changelog"
    return None


def _marks_json(marks: Marks) -> Any:
    """``marks`` as a snapshot's head has them once read."""
    return orjson.loads(orjson.dumps(_marks_out(marks)))
