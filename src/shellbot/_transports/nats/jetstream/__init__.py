"""JetStream, for ``bus.durable`` and durable subscribers: the bus's stream
(``stream``), publishing that knows each message was stored (``publishing``), a
durable subscriber's consumer (``consumer``) and receiver (``durable``, kept in each
publisher's order by ``order``), and a durable queue group's work queue (``work``)."""
