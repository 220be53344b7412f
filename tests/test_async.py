"""asyncio: aget(), areceive() and `async for` never block the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from conftest import Subscribers

from shellbot.bus import Bus, Message, Publisher
from shellbot.errors import ClosedError

T = TypeVar("T")
MAX_GAP = 0.1  # a wait that blocked the loop would stop the ticker for 0.3 s or more


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 20.0)

    return asyncio.run(bounded())


class Ticker:
    """A task that ticks every millisecond; records the longest gap between ticks."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def test_the_loop_keeps_ticking_while_a_subscriber_waits(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "late")

    async def main() -> tuple[Any, Any, Ticker]:
        ticker = Ticker()
        ticker.start()
        started = time.monotonic()
        nothing = await subscriber.aget(timeout=0.3)  # waits on a quiet socket
        assert time.monotonic() - started >= 0.29

        async def publish_later() -> None:
            await asyncio.sleep(0.3)
            publisher.put("late", "finally")

        later = asyncio.get_running_loop().create_task(publish_later())
        something = await subscriber.aget(timeout=5.0)  # waits until a message comes
        await later
        await ticker.stop()
        return nothing, something, ticker

    nothing, something, ticker = run(main())
    assert nothing is None
    assert something == "finally"
    assert ticker.max_gap < MAX_GAP, f"the loop stalled for {ticker.max_gap:.3f} s"
    assert ticker.ticks > 100


def test_async_for_and_areceive(bus: Bus, publisher: Publisher, subscribers: Subscribers) -> None:
    subscriber = subscribers(bus, ["a", "b"])

    async def main() -> list[tuple[str, Any]]:
        publisher.put("a", 0)
        first = await subscriber.areceive(timeout=5.0)
        assert isinstance(first, Message)
        received = [(first.channel, first.message)]
        for index in range(1, 6):
            publisher.put("b" if index % 2 else "a", index)
        async for message in subscriber:
            received.append((message.channel, message.message))
            if len(received) == 6:
                break
        assert await subscriber.areceive(timeout=0.05) is None
        return received

    assert run(main()) == [("b" if index % 2 else "a", index) for index in range(6)]


def test_cancelling_a_waiting_aget_loses_nothing(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "cancel")

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        received: list[Any] = []
        for index in range(30):
            task = loop.create_task(subscriber.aget(timeout=5.0))
            for _ in range(index % 3):  # cancel before, while or after the task waits
                await asyncio.sleep(0)
            publisher.put("cancel", index)
            if index % 2:
                await asyncio.sleep(0)  # let the message arrive, sometimes
            task.cancel()
            try:
                received.append(await task)  # the task had finished: it got the message
            except asyncio.CancelledError:
                received.append(await subscriber.aget(timeout=5.0))  # the next call does
        assert await subscriber.aget(timeout=0.05) is None
        return received

    assert run(main()) == list(range(30))


def test_publishing_from_a_coroutine_keeps_the_loop_free(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "flow")
    count = 3_000

    async def produce() -> None:
        for index in range(count):
            publisher.put("flow", index)
            if index % 100 == 99:
                await asyncio.sleep(0)

    async def main() -> tuple[list[Any], Ticker]:
        ticker = Ticker()
        ticker.start()
        producer = asyncio.get_running_loop().create_task(produce())
        received = []
        async for message in subscriber:
            received.append(message.message)
            if len(received) == count:
                break
        await producer
        await ticker.stop()
        return received, ticker

    received, ticker = run(main())
    assert received == list(range(count))
    assert ticker.max_gap < MAX_GAP, f"the loop stalled for {ticker.max_gap:.3f} s"


def test_closing_from_another_task_ends_the_waits(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    iterated, awaited = subscribers(bus, "nothing-comes"), subscribers(bus, "nothing-comes")

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def iterate() -> list[Message]:
            return [message async for message in iterated]

        iterating = loop.create_task(iterate())
        waiting = loop.create_task(awaited.aget())  # no timeout
        await asyncio.sleep(0.05)
        started = time.monotonic()
        iterated.close()
        awaited.close()
        assert await iterating == []
        assert await waiting is None
        assert time.monotonic() - started < 0.2  # woken, not left to time out
        with pytest.raises(ClosedError):
            await awaited.aget(timeout=1.0)

    run(main())


def test_closing_from_another_thread_ends_an_aget(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "nothing-comes")

    async def main() -> None:
        closer = threading.Timer(0.1, subscriber.close)
        closer.start()
        started = time.monotonic()
        assert await subscriber.aget() is None
        assert time.monotonic() - started < 1.0
        closer.join()

    run(main())


def test_switch_off_ends_async_iteration(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "switch")

    async def main() -> list[Any]:
        publisher.put("switch", "before")
        received = []
        async for message in subscriber:
            received.append(message.message)
            bus.context.set("general.switch", "off")
        return received

    started = time.monotonic()
    assert run(main()) == ["before"]
    assert time.monotonic() - started < 2.0
