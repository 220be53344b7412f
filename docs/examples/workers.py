import os
import threading

from shellbot import Context
from shellbot.bus import Bus

address = os.environ.get('BUS_ADDRESS', 'tcp://127.0.0.1:5555')
bus = Bus(Context({'bus': {'address': address}}))
publisher = bus.publish()
publisher.start()
done = {}                                            # worker -> the images it resized
started = threading.Semaphore(0)

def worker(name):
    jobs = bus.subscribe('resize', group='resizers')  # one member of the pool
    jobs.wait_ready()                                 # it takes its share from now on
    started.release()
    done[name] = []
    while (job := jobs.get(block=True, timeout=1.0)) is not None:
        done[name].append(job['image'])               # each job reaches one worker
    jobs.close()

workers = [threading.Thread(target=worker, args=(f'worker-{n}',)) for n in range(3)]
for thread in workers:
    thread.start()
for thread in workers:
    started.acquire()
for n in range(30):
    publisher.put('resize', {'image': f'{n}.png'})
for thread in workers:
    thread.join()
resized = sorted(image for images in done.values() for image in images)   # all 30, once
print('resized:', len(resized), 'images, each once:', len(set(resized)) == 30)
print('lost:', publisher.stats['group_lost'])   # what members that left had in hand
publisher.stop()
