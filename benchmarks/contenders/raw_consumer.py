"""The stack's physical limit: a raw aiokafka ``getmany`` loop that JSON-decodes every value.

No consumer group (partitions assigned directly, read from the beginning), no commits, no
per-event framework: the socket, aiokafka's record decoding and orjson, nothing else.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import TopicPartition  # type: ignore[import-untyped]

from benchmarks.contenders.common import Status, parse_args
from streamproc.config import load_settings
from streamproc.kafka import clients


async def main() -> None:
    args = parse_args(__doc__ or "")
    status = Status(args.status, args.expect)
    # The security settings (STREAMPROC_KAFKA_*) from the environment, as the worker's.
    consumer = clients.consumer(
        load_settings(broker_url=f"kafka://{args.broker}"),
        client_id=args.app_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in args.topics for p in range(args.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loads = orjson.loads
        next_write = 0.0
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            if batches:
                status.begin()
            for records in batches.values():
                for record in records:
                    loads(record.value)
                status.add(len(records))
            now = time.monotonic()
            if now >= next_write:
                status.write()
                next_write = now + 0.25
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
