"""The publisher and what keeps it: the one way out of a process, and its life.

``publisher``  ``Publisher`` (the spec's ``multiprocessing.Process``) and its ``Fan``
``state``      its ``Phase``, and ``Shared``: what its process tells its starter
``runner``     where a started publisher runs: a process of its own, or a thread
``keeper``     the loop that holds, reaches or takes over the hub, in one ``Mode``
``outbox``     the one way out of a process onto an address, shared by its publishers
"""

from .publisher import Fan, Publisher

__all__ = ["Fan", "Publisher"]
