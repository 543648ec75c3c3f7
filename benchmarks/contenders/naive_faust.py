"""The naive Faust app of the tutorial kind: one changelogged table, ``+= 1`` per event, json.

Counts events per lead (``counts[event["lead_id"]] += 1``; a business event per customer, a
cost without one per event) with Faust's default JSON value serializer: every event is
decoded into a dict and every update is a changelog write.
"""

from __future__ import annotations

from benchmarks.contenders.common import Status, parse_args
from benchmarks.contenders.faust_common import make_app, run

args = parse_args(__doc__ or "")
status = Status(args.status, args.expect)
app = make_app(args)
events = app.topic(*args.topics, value_serializer="json")
counts = app.Table("counts", default=int, partitions=args.partitions)


@app.agent(events)
async def count_per_lead(stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        status.begin()
        counts[event.get("lead_id") or event.get("customer_id") or event["event_id"]] += 1
        status.add()


if __name__ == "__main__":
    run(app, status)
