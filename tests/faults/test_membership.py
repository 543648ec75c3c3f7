"""Workers joining, leaving, dying and shutting down while events flow: nothing lost or doubled."""

from __future__ import annotations

import pytest

from streamproc.tools.net import free_port
from tests.support.faults import (
    Feed,
    Stream,
    check_handover,
    committed_offsets,
    events_total,
    fault_settings,
    shutdown_audit,
    terminate,
    twice_exported,
    verify,
    wait_exact,
    wait_settled,
)
from tests.support.harness import combined

pytestmark = pytest.mark.fault


def test_sigkill_mid_stream_then_a_replacement(
    settings_factory, make_topics, worker_factory, kafka_producer, figures
) -> None:
    settings = fault_settings(settings_factory)
    make_topics(settings)
    # 5 % invalid: the uncommitted tail replayed after the kill holds some of them. The
    # business events flow too (6 % of the stream: costs, churns, NPS answers), and the won
    # deals carry products: the customers' state is taken over as well, exact.
    stream = Stream(settings, 10_000, invalid=500, seed=21, business=600)
    first = worker_factory(settings, name="first", ready=False)
    second = worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="second", ready=False
    )
    wait_settled([first, second], settings.partitions)
    feed = Feed(kafka_producer(), stream.messages, rate=600, hold_back=2_000).start()

    feed.wait_for(0.3)
    first.kill()  # SIGKILL: no commit, no changelog flush, no leave-group
    figures["sigkill_at"] = f"{feed.mid_stream()}/{feed.total}"
    feed.wait_for(0.55)
    third = worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="third", ready=False
    )
    figures["replacement_at"] = f"{feed.mid_stream()}/{feed.total}"
    feed.release()
    feed.join()
    live = [second, third]
    figures["settled_s"] = wait_settled(live, settings.partitions, timeout=90)
    verify(stream, live, figures, crashed=first)
    business = {"sales_cost_per_lead", "sales_customers_churned", "sales_nps_score",
                "sales_product_attach_ratio", "sales_customer_profit"}  # fmt: skip
    assert business <= {name for name, _ in stream.kpis()}  # checked exact by ``verify``


def test_join_and_leave_three_times_hands_every_series_over(
    settings_factory, make_topics, worker_factory, kafka_producer, figures
) -> None:
    settings = fault_settings(settings_factory)
    make_topics(settings)
    stream = Stream(settings, 14_000, seed=12, business=700)  # customers handed over too

    def start(name: str):  # type: ignore[no-untyped-def]
        return worker_factory(
            settings.model_copy(update={"web_port": free_port()}), name=name, ready=False
        )

    live = [start("w1"), start("w2")]
    wait_settled(live, settings.partitions)
    feed = Feed(kafka_producer(), stream.messages, rate=300, hold_back=1_000).start()
    cycles = []
    for cycle in range(3):
        feed.wait_for(0.05 + cycle * 0.25)
        joiner = start(f"w{cycle + 3}")
        joined_at = feed.mid_stream()
        live.append(joiner)
        join_s = wait_settled(live, settings.partitions)
        _, exporters = combined(live)
        assert not twice_exported(exporters), f"cycle {cycle}: whole series twice after a join"
        leaver = live.pop(0)
        left_at = feed.mid_stream()
        exit_s = terminate(leaver)
        assert exit_s < 10, f"{leaver.name} took {exit_s}s to exit on SIGTERM"
        leave_s = wait_settled(live, settings.partitions)
        # Checkpoint: stop producing, let the group catch up, compare with the truth so far.
        upto = feed.pause()
        converged = wait_exact(live, lambda upto=upto: stream.kpis(upto), 30, stream)
        check_handover(live, stream.kpis(upto))
        feed.resume()
        cycles.append(
            {
                "cycle": cycle,
                "joined_at": joined_at,
                "left_at": left_at,
                "join_settled_s": join_s,
                "sigterm_exit_s": exit_s,
                "leave_settled_s": leave_s,
                "checkpoint_converged_s": converged,
            }
        )
        print(cycles[-1], flush=True)
    figures["stream"] = len(stream)
    figures["cycles"] = cycles
    figures["faults_while_not_flowing"] = feed.stalls
    feed.hurry()  # the last ~45 % of the stream: ~20 s at 300/s, with no fault left to meet
    feed.join()
    wait_settled(live, settings.partitions)
    verify(stream, live, figures)


def test_sigterm_under_load_exits_in_time_and_a_new_worker_recovers(
    settings_factory, make_topics, worker_factory, kafka_producer, figures
) -> None:
    settings = fault_settings(settings_factory)
    make_topics(settings)
    stream = Stream(settings, 8_000, seed=33)
    only = worker_factory(settings, name="only")
    feed = Feed(kafka_producer(), stream.messages, rate=1_000, hold_back=2_000).start()
    feed.wait_for(0.4)
    seen = events_total([only])  # what it had handled a moment before the signal
    figures["sigterm_at"] = f"{feed.mid_stream()}/{feed.total}"
    figures["sigterm_exit_s"] = exit_s = terminate(only)
    produced_at_exit = feed.produced
    assert exit_s < 10, f"SIGTERM exit took {exit_s}s"
    committed = sum(committed_offsets(settings).values())
    figures["handled_before_sigterm"] = int(sum(seen.values()))
    figures["committed_at_exit"] = committed
    figures["produced_at_exit"] = produced_at_exit
    assert committed >= sum(seen.values()), "work handled before the SIGTERM was not committed"
    # Before anyone takes over: what the leaver committed against what its changelog holds.
    audit = shutdown_audit(stream)
    figures.update(audit)
    assert audit["committed_not_applied"] == 0, f"committed without effect (lost): {audit}"
    successor = worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="successor", ready=False
    )
    figures["successor_at"] = f"{feed.mid_stream()}/{feed.total}"
    feed.release()
    feed.join()
    wait_settled([successor], settings.partitions)
    verify(stream, [successor], figures)
