import os

from shellbot import Context
from shellbot.bus import Bus

# one server; a cluster is every server you know: 'nats://h1:4222,nats://h2:4222,nats://h3:4222'
# credentials in the URL: nats://user:password@h1:4222 or nats://token@h1:4222
address = os.environ.get('NATS_ADDRESS', 'nats://127.0.0.1:4222')
bus = Bus(Context({'bus': {'address': address}}))

subscriber = bus.subscribe('votes.*', pattern=True)   # NATS-style patterns, matched by the server
subscriber.wait_ready()                               # True once a probe came back from every node

publisher = bus.publish()
publisher.start()                  # returns once connected: the server is the hub
print('holds a hub:', publisher.holds_hub)
publisher.put('votes.alice', 'pizza')
message = subscriber.receive(block=True, timeout=5.0)
print(message.channel, message.message)
publisher.stop()
subscriber.close()
