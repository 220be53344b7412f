"""A bot and its test: the shellbot pytest plugin gives the test a bus of its own."""

import pytest


def lunch_bot(bus):
    """Hears questions on 'bot.in', answers on 'bot.out'."""
    answers = bus.publish()
    answers.start()                                # holds the hub, or finds the one that does
    questions = bus.subscribe('bot.in')
    assert questions.wait_ready()
    return questions, answers


@pytest.mark.parametrize('bus', ['memory', 'tcp', 'nats'], indirect=True)
def test_the_bot_answers(bus):
    bot = bus()                                    # a fresh address of the transport
    questions, answers = lunch_bot(bot)
    tester = bus(address=bot.address)              # another bus on the same address
    heard = tester.subscribe('bot.out')
    assert heard.wait_ready()

    tester.publish().put('bot.in', {'question': 'lunch?'})
    assert questions.get(block=True, timeout=5.0) == {'question': 'lunch?'}
    answers.put('bot.out', {'ballot': 'pizza'})
    assert heard.get(block=True, timeout=5.0) == {'ballot': 'pizza'}
    # what the buses started ends with the test


def test_the_bot_survives_a_restarted_server(nats_server, bus, faults):
    bot = bus('nats')
    questions, answers = lunch_bot(bot)
    faults.kill(nats_server)                       # kill -9, as a crash would
    nats_server.start()                            # back on the same port
    assert questions.wait_ready(10.0)
    bus(address=bot.address).publish().put('bot.in', 'still there?')
    assert questions.get(block=True, timeout=10.0) == 'still there?'
