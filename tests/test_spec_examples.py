"""Every code example of the spec (the documentation of ``shellbot.bus``), as written.

The examples refer to a ``bot`` (with ``id`` and ``direct_channels``), an
``engine`` (the context) and placeholders (``...``); those are set up here.
The spec's ``message = { ... }`` stands for a dict; ``while True`` loops get a
``break`` once the expected message is in, so the test ends.
"""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from shellbot import Context
from shellbot.bus import Bus, Publisher, Subscriber


@pytest.fixture
def engine(tcp_address: str) -> Context:
    return Context({"bus": {"address": tcp_address}})


@pytest.fixture
def bot() -> SimpleNamespace:
    return SimpleNamespace(id="direct-1", direct_channels=["direct-1", "direct-2", "direct-3"])


def run_example(code: str, namespace: dict) -> dict:
    exec(textwrap.dedent(code), namespace)  # the spec's text, unchanged
    return namespace


def test_the_module_api(engine: Context) -> None:
    assert Bus.DEFAULT_ADDRESS == "tcp://127.0.0.1:5555"
    assert issubclass(Publisher, __import__("multiprocessing").Process)
    assert Publisher.DEFER_DURATION == 0.3
    assert Publisher.EMPTY_DELAY == 0.005
    unset = Context()
    Bus(unset).check()
    assert unset.get("bus.address") == "tcp://127.0.0.1:5555"
    Bus(engine).check()
    assert engine.get("bus.address").startswith("tcp://127.0.0.1:")
    assert engine.get("bus.address") != Bus.DEFAULT_ADDRESS
    assert isinstance(Bus(engine).subscribe("x"), Subscriber)


def test_publish_and_subscribe_examples(engine: Context, bot: SimpleNamespace) -> None:
    bus = Bus(engine)
    bus.check()
    spy = bus.subscribe(bot.direct_channels)
    namespace = run_example(
        """
        # get a publisher for subsequent broadcasts
        publisher = bus.publish()

        # start the publishing process
        publisher.start()

        ...

        # broadcast information_message
        publisher.put(channel, message)
        """,
        {"bus": bus, "channel": "direct-2", "message": {"instruction": "vote"}},
    )
    publisher = namespace["publisher"]
    try:
        assert spy.get(block=True, timeout=5.0) == {"instruction": "vote"}
        namespace = run_example(
            """
            # subscribe from all direct channels related to this group channel
            subscriber = bus.subscribe(bot.direct_channels)

            ...

            # get next message from these channels
            message = subscriber.get()
            """,
            {"bus": bus, "bot": bot},
        )
        subscriber = namespace["subscriber"]
        assert namespace["message"] is None  # nothing was sent since
        assert subscriber.wait_ready()
        publisher.put(bot.direct_channels[0], "hello")
        assert subscriber.get(block=True, timeout=5.0) == "hello"
    finally:
        publisher.stop()


def test_publisher_examples(engine: Context, bot: SimpleNamespace) -> None:
    bus = Bus(engine)
    bus.check()
    subscriber = bus.subscribe(bot.direct_channels)
    holder = bus.publish()
    holder.start()
    try:
        assert subscriber.wait_ready()
        run_example(
            """
            # get a publisher
            publisher = bus.publish()

            # send instruction to direct channels
            publisher.put(bot.direct_channels, instruction)
            """,
            {"bus": bus, "bot": bot, "instruction": {"do": "vote"}},
        )
        assert [subscriber.get(block=True, timeout=5.0) for _ in range(3)] == [{"do": "vote"}] * 3
        namespace = run_example(
            """
            # get a publisher
            publish = bus.publish()

            # share new state
            publisher.put(bot.id, bit_of_information_here)
            """,
            {
                "bus": bus,
                "bot": bot,
                "bit_of_information_here": {"state": "voted"},
                "publisher": holder,
            },
        )
        assert isinstance(namespace["publish"], Publisher)
        assert subscriber.get(block=True, timeout=5.0) == {"state": "voted"}
        run_example(
            """
            message = { 'key': 'value' }
            publisher.put(bot.id, message)
            """,
            {"publisher": holder, "bot": bot},
        )
        assert subscriber.get(block=True, timeout=5.0) == {"key": "value"}
    finally:
        holder.stop()


def test_run_examples_start_and_stop(engine: Context) -> None:
    address = engine.get("bus.address")
    namespace = run_example(
        """
        publisher = Publisher(address)
        process = publisher.start()
        """,
        {"Publisher": Publisher, "address": address},
    )
    publisher = namespace["publisher"]
    assert publisher.is_alive()
    publisher.context.set("general.switch", "off")
    publisher.join(timeout=2.0)
    assert not publisher.is_alive()

    publisher = Bus(engine).publish()
    publisher.start()
    run_example("engine.set('general.switch', 'off')", {"engine": engine})
    publisher.join(timeout=2.0)
    assert not publisher.is_alive()

    engine.set("general.switch", "on")
    publisher = Bus(engine).publish()
    publisher.start()
    run_example("publisher.fan.put(None)", {"publisher": publisher})
    publisher.join(timeout=2.0)
    assert not publisher.is_alive()


def test_subscriber_examples(engine: Context, bot: SimpleNamespace) -> None:
    bus = Bus(engine)
    publisher = bus.publish()
    publisher.start()
    try:
        namespace = run_example(
            """
            # subscribe from all direct channels related to this group channel
            subscriber = bus.subscribe(bot.direct_channels)
            subscriber.wait_ready()
            publisher.put(bot.direct_channels, 'hello')

            # get messages from direct channels
            while True:
                message = subscriber.get()
                if message: break
            """,
            {"bus": bus, "bot": bot, "publisher": publisher},
        )
        assert namespace["message"] == "hello"
        namespace = run_example(
            """
            # subscribe for messages sent to me
            subscriber = bus.subscribe(bot.id)
            subscriber.wait_ready()
            publisher.put(bot.id, {'instruction': 'vote'})

            # get and process instructions one at a time
            while True:
                instruction = subscriber.get()
                if instruction: break
            """,
            {"bus": bus, "bot": bot, "publisher": publisher},
        )
        assert namespace["instruction"] == {"instruction": "vote"}
        subscriber = namespace["subscriber"]
        namespace = run_example(
            """
            message = subscriber.get()  # immedaite return
            if message:
                ...
            """,
            {"subscriber": subscriber},
        )
        assert namespace["message"] is None
        publisher.put(bot.id, {"instruction": "count"})
        namespace = run_example(
            "message = subscriber.get(block=True)  # wait until available",
            {"subscriber": subscriber},
        )
        assert namespace["message"] == {"instruction": "count"}
    finally:
        publisher.stop()
