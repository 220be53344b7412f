import os
import threading

from shellbot import Context
from shellbot.bus import Bus
from shellbot.errors import NoResponders

address = os.environ.get('BUS_ADDRESS', 'tcp://127.0.0.1:5555')
bus = Bus(Context({'bus': {'address': address}}))
publisher = bus.publish()
publisher.start()                              # keeps the hub up, as for put()

responder = bus.subscribe('double')
responder.wait_ready()
def serve():
    for request in responder:                  # until closed; request.is_request is True
        request.reply(request.message * 2)
threading.Thread(target=serve, daemon=True).start()

answer = bus.request('double', 21, timeout=2.0)               # 42
answers = bus.request_all('double', 4, timeout=0.5, count=1)  # [Message(message=8, sender=...)]
print('answer:', answer, 'answers:', [answer.message for answer in answers])
try:
    bus.request('nobody', 1)                   # no one subscribes: raised at once
except NoResponders:
    print('nobody: NoResponders')
responder.close()
publisher.stop()
