"""What the original shellbot did, and a porting user counts on: each test is named
after the original's behaviour it keeps."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import Subscribers

from shellbot import Context
from shellbot._codec import WIDE, encode
from shellbot.bus import Bus, Publisher
from shellbot.errors import MessageError

# -- secrets from the environment ---------------------------------------------------


def test_an_unset_variable_reads_as_none_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SHELLBOT_TEST_UNSET", raising=False)
    context = Context({"spark": {"token": "$SHELLBOT_TEST_UNSET"}})
    with caplog.at_level(logging.WARNING, logger="shellbot.context"):
        context.check("spark.token", filter=True)
    assert context.get("spark.token") is None
    assert "SHELLBOT_TEST_UNSET is not set" in caplog.text
    # Mandatory too: the key is there, its variable is not.
    context.set("spark.token", "$SHELLBOT_TEST_UNSET")
    context.check("spark.token", is_mandatory=True, filter=True)
    assert context.get("spark.token") is None


def test_the_default_stands_in_for_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHELLBOT_TEST_UNSET", raising=False)
    context = Context({"spark": {"token": "$SHELLBOT_TEST_UNSET"}})
    context.check("spark.token", default="hello there", filter=True)
    assert context.get("spark.token") == "hello there"


def test_a_default_that_names_a_variable_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELLBOT_TEST_SET", "hello")
    context = Context()
    context.check("spark.token", default="$SHELLBOT_TEST_SET", filter=True)
    assert context.get("spark.token") == "hello"
    context.set("spark.token", "$SHELLBOT_TEST_SET")
    context.check("spark.token", default="$SHELLBOT_TEST_SET", filter=True)
    assert context.get("spark.token") == "hello"


def test_a_placeholder_is_never_stored_as_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHELLBOT_TEST_UNSET", raising=False)
    context = Context()
    context.check("spark.token", default="$SHELLBOT_TEST_UNSET", filter=True)
    assert context.get("spark.token") is None
    context.set("spark.token", "$SHELLBOT_TEST_UNSET")
    context.check("spark.token", default="$SHELLBOT_TEST_UNSET", filter=True)
    assert context.get("spark.token") is None


def test_an_empty_variable_is_kept_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELLBOT_TEST_EMPTY", "")
    context = Context({"spark": {"token": "$SHELLBOT_TEST_EMPTY"}})
    context.check("spark.token", default="ok?", filter=True)
    assert context.get("spark.token") == ""


def test_a_custom_filter_is_called_for_missing_and_none_values() -> None:
    seen: list[tuple[object, object]] = []

    def mark(value: object, default: object) -> object:
        seen.append((value, default))
        return f"<{value}>"

    context = Context({"spark": {"room": None}}, filter=mark)
    context.check("spark.room", filter=True)
    context.check("spark.absent", filter=True)
    context.apply({"my.var": "my value"})
    context.check("my.var", filter=True)
    assert seen == [(None, None), (None, None), ("my value", None)]
    assert context.get("spark.absent") == "<None>"
    assert context.get("my.var") == "<my value>"


# -- validate implies mandatory -------------------------------------------------------


def test_validate_implies_mandatory() -> None:
    context = Context()
    with pytest.raises(KeyError, match=r"spark\.unknown"):
        context.check("spark.unknown", validate=lambda value: True)
    with pytest.raises(KeyError, match=r"spark\.unknown"):
        context.check("spark.unknown", is_mandatory=True, filter=True)
    context.check("spark.unknown", filter=True)  # filter alone: not mandatory


# -- nested settings -------------------------------------------------------------------


def test_a_section_is_present_for_check_and_get() -> None:
    context = Context({"db": {"conn": {"host": "db1", "port": 5432}}})
    context.check("db.conn", default={})  # present: nothing stored over what lies below
    assert context.get("db.conn") == {"host": "db1", "port": 5432}
    assert context.get("db.conn.host") == "db1"
    context.check("db.conn", is_mandatory=True)
    context.check("db.conn", validate=lambda conn: conn["host"] == "db1")
    with pytest.raises(ValueError, match=r"db\.conn"):
        context.check("db.conn", validate=lambda conn: "user" in conn)
    context.check("db.other", default={})
    assert context.get("db.other") == {}


def test_the_default_filter_is_a_class_method_as_in_the_original(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHELLBOT_TEST_SET", "hello")
    monkeypatch.delenv("SHELLBOT_TEST_UNSET", raising=False)
    assert Context._filter(None) is None
    assert Context._filter("") == ""
    assert Context._filter("ZLOGQ0OVGlZWU1NmYtyY") == "ZLOGQ0OVGlZWU1NmYtyY"
    assert Context._filter("$SHELLBOT_TEST_SET") == "hello"
    with caplog.at_level(logging.WARNING, logger="shellbot.context"):
        assert Context._filter("$SHELLBOT_TEST_UNSET") is None  # a warning, no error
    assert "SHELLBOT_TEST_UNSET is not set" in caplog.text


def test_apply_flattens_as_the_original() -> None:
    context = Context()
    context.apply()  # no argument: nothing to apply
    assert context.is_empty
    context.apply(
        {
            "spark": {"CISCO_SPARK_BTTN_BOT": "who_knows"},
            "spark.room": "title",
            "DEBUG": True,
            "server": {"port": 80, "url": "http://www.acme.com/"},
            "bot.store": {"planets": ["Uranus", "Mercury"]},
        }
    )
    assert context.get("DEBUG") is True
    assert context.get("spark.CISCO_SPARK_BTTN_BOT") == "who_knows"
    assert context.get("spark.room") == "title"
    assert context.get("server.port") == 80
    assert context.get("bot.store.planets") == ["Uranus", "Mercury"]
    assert context.get("bot.store") == {"planets": ["Uranus", "Mercury"]}


def test_has_matches_a_plain_prefix() -> None:
    context = Context({"spark": {"room": "lobby", "team": "anchor"}})
    assert context.has("spark") and context.has("spark.team") and context.has("spa")
    assert not context.has("hello") and not context.has(".token")


def test_a_counter_that_is_not_an_integer_starts_from_zero() -> None:
    context = Context({"gauge": {"text": "world", "float": 2.5}})
    assert context.increment("gauge.text") == 1
    assert context.increment("gauge.float") == 1
    assert context.decrement("gauge.absent") == -1


# -- messages Python's json accepts ------------------------------------------------------

JSON_ACCEPTS = [
    {7: "x", 1.5: "y", True: "z", None: "n"},
    {"nested": [{1: {2: "deep"}}]},
    2**64,
    -(2**70),
    {"big": [10**30, 1], "text": "déjà vu"},
    "lone \ud800 surrogate",
]


@pytest.mark.parametrize("value", JSON_ACCEPTS, ids=repr)
def test_what_json_writes_is_encoded_as_json_writes_it(value: object) -> None:
    data = encode(value, 1 << 20)
    text = data.removeprefix(WIDE).decode()
    assert json.loads(text) == json.loads(json.dumps(value))


def test_what_json_accepts_arrives_as_json_reads_it(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "room")
    for value in JSON_ACCEPTS:
        publisher.put("room", value)
    publisher.put("room", "end")
    received = [subscriber.get(block=True, timeout=5.0) for _ in range(len(JSON_ACCEPTS) + 1)]
    assert received == [json.loads(json.dumps(value)) for value in JSON_ACCEPTS] + ["end"]
    assert received[2] == 2**64 and isinstance(received[2], int)  # exact, not a float
    assert subscriber.stats["dropped"] == 0


def test_a_run_of_wide_messages_arrives_whole(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    """Under a backlog the bus joins messages of a channel: wide ones among them too."""
    subscriber = subscribers(bus, "room")
    values = [2**64 + n if n % 3 == 0 else n for n in range(3000)]
    for value in values:
        publisher.put("room", value)
    received = [subscriber.get(block=True, timeout=10.0) for _ in values]
    assert received == values
    assert subscriber.stats["dropped"] == 0 and subscriber.stats["missed"] == 0


def test_what_json_refuses_is_still_refused_at_put(tcp_bus: Bus) -> None:
    publisher = tcp_bus.publish()
    with pytest.raises(MessageError, match="NaN"):
        publisher.put("room", {1: float("nan")})
    with pytest.raises(MessageError, match="NaN"):
        publisher.put("room", [2**64, float("inf")])
    with pytest.raises(TypeError, match="JSON"):
        publisher.put("room", {(1, 2): "tuple key"})
    with pytest.raises(TypeError, match="JSON"):
        publisher.put("room", [2**64, object()])


# -- the publisher's hooks and attributes ----------------------------------------------


class Recording(Publisher):
    """A subclass of the original's kind: it sees each item, then lets it go."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.items: list[str] = []

    def process(self, item: str | bytes) -> None:
        assert isinstance(item, str)
        self.items.append(item)
        super().process(item)


def test_an_overridden_process_sees_every_item(bus: Bus, subscribers: Subscribers) -> None:
    publisher = Recording(bus.context)
    publisher.start()
    try:
        subscriber = subscribers(bus, ["a", "b"])
        publisher.put(["a", "b"], {"x": 1})
        publisher.put("a", "déjà")
        assert publisher.items == ['a {"x": 1}', 'b {"x": 1}', 'a "d\\u00e9j\\u00e0"']
        received = [subscriber.receive(block=True, timeout=5.0) for _ in range(3)]
        assert [(m.channel, m.message) for m in received] == [
            ("a", {"x": 1}),
            ("b", {"x": 1}),
            ("a", "déjà"),
        ]
        with pytest.raises(MessageError):
            publisher.put("a", None)  # refused before process() sees it
        assert len(publisher.items) == 3
    finally:
        publisher.stop()


def test_fan_takes_the_original_item_and_holds_nothing(
    tcp_bus: Bus, subscribers: Subscribers
) -> None:
    publisher = tcp_bus.publish()
    publisher.start()
    try:
        subscriber = subscribers(tcp_bus, "chan")
        publisher.fan.put('chan {"hello": "world"}')
        publisher.fan.put('["chan", [1, 2]]')  # the JSON form stays
        assert publisher.fan.empty() and publisher.fan.qsize() == 0
        assert subscriber.get(block=True, timeout=5.0) == {"hello": "world"}
        assert subscriber.get(block=True, timeout=5.0) == [1, 2]
        with pytest.raises(MessageError, match="channel json"):
            publisher.fan.put("no-space-no-json")
    finally:
        publisher.stop()


def test_settings_changed_after_publish_are_used_by_start(
    tcp_bus: Bus, tcp_address: str, subscribers: Subscribers
) -> None:
    from conftest import free_port_pair

    publisher = tcp_bus.publish()
    moved = f"tcp://127.0.0.1:{free_port_pair()}"
    tcp_bus.context.set("bus.address", moved)
    publisher.start()
    try:
        assert publisher.holds_hub and publisher.settings.address == moved
        subscriber = subscribers(tcp_bus, "room")  # the bus reads the context anew
        publisher.put("room", "moved")
        assert subscriber.get(block=True, timeout=5.0) == "moved"
    finally:
        publisher.stop()


def test_the_publisher_counter_is_written_as_it_stops(tcp_bus: Bus) -> None:
    started = tcp_bus.publish()
    for value in range(3):
        started.put("channel_A", value)
    started.fan.put(None)
    started.start()
    started.join(10.0)
    assert not started.is_alive()
    assert tcp_bus.context.get("publisher.counter") == 3


def test_the_publisher_logs_its_start_and_stop(
    tcp_bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = tcp_bus.publish()
    publisher.put("channel_B", "world")
    publisher.fan.put(None)
    with caplog.at_level(logging.INFO, logger="shellbot.bus"):
        publisher.run()  # in the foreground, as the original's test does
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert f"Starting publisher at {tcp_bus.context.get('bus.address')}" in messages
    assert "Publisher has been stopped" in messages
    assert tcp_bus.context.get("publisher.counter") == 1


def test_the_publisher_counter_counts_from_the_publishers_making(tcp_bus: Bus) -> None:
    first = tcp_bus.publish()
    for value in range(3):
        first.put("channel_A", value)
    first.stop()
    second = tcp_bus.publish()  # as the original's static test: a new one, nothing put
    second.fan.put(None)
    second.start()
    second.join(10.0)
    assert tcp_bus.context.get("publisher.counter") == 0


def test_the_socket_attributes_of_the_original_are_there(tcp_bus: Bus) -> None:
    assert tcp_bus.publish().socket is None
    subscriber = tcp_bus.subscribe("channel")
    try:
        assert subscriber.socket is None
    finally:
        subscriber.close()
