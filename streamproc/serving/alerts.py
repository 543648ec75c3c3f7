"""Publishing SLA alerts: on the alerts topic, remembered in the lead, then to side channels."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import faust
from prometheus_client import Counter

from streamproc.contract.outputs import Alert
from streamproc.engine.lead import LeadState
from streamproc.engine.sla_watch import AlertWatch
from streamproc.state.lead_log import LeadLog

__all__ = ["AlertHook", "AlertPublisher"]

log = logging.getLogger(__name__)
AlertHook = Callable[[Alert], Awaitable[None]]


class AlertPublisher:
    """Asks the watch what is due or resolved and publishes it, once per alert id."""

    def __init__(
        self, watch: AlertWatch, topic: faust.TopicT, lead_log: LeadLog, counter: Counter
    ) -> None:
        self.watch = watch
        self.topic = topic
        self.lead_log = lead_log
        self.counter = counter
        # Called with each published alert (the Redis channel); failures are logged only.
        self.hooks: list[AlertHook] = []
        # Ids being published: a lead changing meanwhile reschedules its deadline, and the
        # next round must not publish the same alert again before it is remembered.
        self._in_flight: set[str] = set()

    async def publish_due(self, leads: Mapping[str, LeadState], now: float) -> None:
        due = self.watch.due(leads, now)
        if not due:
            return
        try:
            await self._publish(due)
        except BaseException:
            # ``due`` took their deadlines out of the watch: back in, for a later round (or
            # the snapshot of a shutdown that cut this round short, ``NotReady``).
            for lead, _ in due:
                self.watch.schedule(lead)
            raise
        finally:
            for lead, _ in due:
                lead.pack()

    async def after_change(self, leads: Iterable[LeadState], now: float) -> None:
        """Schedule the deadlines of changed leads; resolve breached ones now contacted."""
        resolved = []
        # One lead can come twice (both breach levels in one publication): resolve it once.
        for lead in {lead.lead_id: lead for lead in leads}.values():
            self.watch.schedule(lead)
            alert = self.watch.resolution(lead, now)
            if alert is not None:
                resolved.append((lead, alert))
        if resolved:
            await self._publish(resolved)

    async def _publish(self, items: list[tuple[LeadState, Alert]]) -> None:
        """Publish, then remember in the lead (changelogged): a crash in between repeats an
        alert with the same id, which a subscriber can drop; nothing is ever skipped."""
        items = [(lead, a) for lead, a in items if a.alert_id not in self._in_flight]
        ids = {alert.alert_id for _, alert in items}
        self._in_flight |= ids
        try:
            await self._send_and_remember(items)
        finally:
            self._in_flight -= ids
        for _, alert in items:
            await self._run_hooks(alert)
        # A first contact may have been applied while this was in flight.
        await self.after_change([lead for lead, _ in items], time.time())

    async def _send_and_remember(self, items: list[tuple[LeadState, Alert]]) -> None:
        pending = [
            await self.topic.send(key=lead.lead_id.encode(), value=alert.model_dump_json().encode())
            for lead, alert in items
        ]
        await asyncio.gather(*pending)
        for lead, alert in items:
            lead.remember_alert(alert.alert_id)
            self.counter.labels(alert.kind).inc()
            log.info("alert %s level %d for lead %s", alert.kind, alert.level, lead.lead_id)
        await self.lead_log.write([lead for lead, _ in items])

    async def _run_hooks(self, alert: Alert) -> None:
        for hook in self.hooks:
            try:
                await hook(alert)
            except Exception as exc:  # a side channel must never stop the alerts topic
                log.warning("alert hook failed: %r", exc)
