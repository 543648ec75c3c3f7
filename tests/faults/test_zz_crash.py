import time
import pytest
from streamproc.net import free_port
from .support import Feed, Stream, fault_settings, terminate, wait_settled

pytestmark = pytest.mark.fault

def test_crash(settings_factory, make_topics, worker_factory, kafka_producer, figures):
    settings = fault_settings(settings_factory)
    make_topics(settings)
    stream = Stream(settings, 4_000, seed=71)
    def start(name):
        return worker_factory(settings.model_copy(update={"web_port": free_port()}), name=name, ready=False)
    live = [start("w1"), start("w2")]
    wait_settled(live, settings.partitions)
    Feed(kafka_producer(), stream.messages, rate=4000).start().join()
    time.sleep(2)
    for i in range(3):
        t = start(f"t{i}")
        wait_settled([*live, t], settings.partitions)
        terminate(t)
        wait_settled(live, settings.partitions)
        print("round", i, "ok", flush=True)
