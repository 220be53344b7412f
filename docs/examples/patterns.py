import os

from shellbot import Context
from shellbot.bus import Bus

address = os.environ.get('BUS_ADDRESS', 'tcp://127.0.0.1:5555')
bus = Bus(Context({'bus': {'address': address}}))
group = bus.publish()
group.start()
bots = ['bot-1', 'bot-2']                       # the direct channels the group knows
reports = bus.subscribe([f'{bot}.out' for bot in bots])   # the group listens to them all

# each direct channel, in its own process (forked, spawned or another program),
# listens on its own id and makes its own Bus and Publisher to report on it
bot_bus = Bus(Context({'bus': {'address': address}}))
inbox = bot_bus.subscribe('bot-1.in')
outbox = bot_bus.publish()
outbox.start()                                  # uses the hub already holding the address
reports.wait_ready() and inbox.wait_ready()     # True once both are live at the hub

# fan-out: the group channel instructs every direct channel it knows, in one put()
group.put([f'{bot}.in' for bot in bots], {'question': 'lunch?'})
instruction = inbox.get(block=True, timeout=5.0)    # {'question': 'lunch?'}
print('bot-1 was asked:', instruction)

# fan-in: each direct channel reports on its own id, and the group hears it
outbox.put('bot-1.out', {'ballot': 'pizza'})
report = reports.get(block=True, timeout=5.0)       # {'ballot': 'pizza'}, not the instruction
print('the group heard:', report)
print('and nothing else:', reports.get())

outbox.stop()
group.stop()
