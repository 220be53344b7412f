import os

from shellbot import Context
from shellbot.bus import Bus

address = os.environ.get('NATS_ADDRESS', 'nats://127.0.0.1:4222')   # a server with JetStream
bus = Bus(Context({'bus': {'address': address, 'durable': True}}))

ballots = bus.subscribe('ballots', durable='counter')   # a name: letters, digits, _ and -
ballots.wait_ready()
ballots.close()                  # the bot goes away; the server keeps its position

publisher = bus.publish()
publisher.put('ballots', {'voter': 'alice', 'choice': 'pizza'})
print('stored:', publisher.stop())   # True once the server stored everything put
print('stats:', publisher.stats)     # {..., 'stored': 1, 'retried': 0, 'duplicates': 0, ...}

ballots = bus.subscribe('ballots', durable='counter')   # back, in this process or another
ballot = ballots.get(block=True, timeout=5.0)           # {'voter': 'alice', 'choice': 'pizza'}
print('ballot:', ballot)
ballots.close(forget=True)       # done for good: the server forgets the position
