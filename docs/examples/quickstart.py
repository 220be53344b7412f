import os

from shellbot import Context
from shellbot.bus import Bus

address = os.environ.get('BUS_ADDRESS', 'tcp://127.0.0.1:5555')
context = Context({'bus': {'address': address}})
bus = Bus(context)
bus.check()                        # bus.address defaults to tcp://127.0.0.1:5555

publisher = bus.publish()          # a multiprocessing.Process (daemon)
publisher.start()                  # returns once the bus is up: it holds the hub, or found one

subscriber = bus.subscribe(['direct-1', 'direct-2'])
subscriber.wait_ready()            # True once the subscriptions are live at the hub

publisher.put(['direct-1', 'direct-2'], {'question': 'lunch?', 'options': ['pizza', 'sushi']})
print(subscriber.get(block=True, timeout=5.0))   # waits for the next message, at most 5 s
print(subscriber.receive(block=True, timeout=5.0).channel)   # a Message: channel, message...
print(subscriber.get())            # the next message, or None at once

context.set('general.switch', 'off')      # stops the publisher (it looks every 0.1 s)
publisher.join(5.0)
