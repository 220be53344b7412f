from shellbot.bus import Bus, Publisher


def test_a_message_goes_through_each_transport(bus: Bus, publisher: Publisher) -> None:
    subscriber = bus.subscribe("direct-1")
    assert subscriber.wait_ready(timeout=5.0)
    publisher.put("direct-1", {"question": "lunch?"})
    assert subscriber.get(block=True, timeout=5.0) == {"question": "lunch?"}
