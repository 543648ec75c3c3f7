"""A Faust agent that does nothing per event: Faust's own per-event ceiling.

Raw values (no decoding), no table: what remains is the stream machinery every Faust agent
pays per event (the event object, the ack, sensors, the context switch per message).
"""

from __future__ import annotations

from benchmarks.contenders.common import Status, parse_args
from benchmarks.contenders.faust_common import make_app, run

args = parse_args(__doc__ or "")
status = Status(args.status, args.expect)
app = make_app(args)
events = app.topic(*args.topics, value_serializer="raw")


@app.agent(events)
async def do_nothing(stream):  # type: ignore[no-untyped-def]
    async for _value in stream:
        status.begin()
        status.add()


if __name__ == "__main__":
    run(app, status)
