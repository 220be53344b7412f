"""The distributed vote of the spec: both bus patterns at work, without any rendering.

The host is the group channel. Its voters are direct channels, named
``vote.<id>.voter-NN``, each served by a thread in one of a few worker
processes (threads of the host itself on process-local transports):

1. every voter subscribes to its own channel, confirms the subscription live
   (``wait_ready``) and says ``ready`` on it;
2. the host, once every voter is ready, broadcasts the question to the list
   of direct channels in one ``put()`` (pattern 1), with a due time a little
   ahead, so that every voter starts thinking at the same moment;
3. each voter thinks for a random time, then publishes its ballot on its own
   channel (pattern 2); the host subscribes to every channel of the vote
   (``vote.<id>.*``) and tallies ballots as they arrive;
4. when every voter has voted, or ``timeout`` seconds after the due time, the
   host closes the vote and broadcasts the result to every direct channel. It
   listens ``LATE_GRACE`` seconds more for late ballots, which it reports
   without counting them.

Joining from another terminal or host, over the bus only::

    joiner                                  host (waiting for joiners)
    subscribe shellbot.vote.join.<token>
    put shellbot.vote.join  {join, token, voters: 5}     (repeated until answered)
                                            registers voter-21..voter-25
    <- shellbot.vote.join.<token> {welcome, vote, voters: [...], ask_by}
    starts 5 voters; each says ready on its channel  ->  host asks once they are ready

A host refuses joins once the question is out. Every choice a voter makes
comes from ``random.Random`` seeded with the vote's seed and the voter's
number, so a run with the same ``--seed`` and voters gives the same result.

Nothing here prints: the host reports to a ``HostView`` and the joiner to a
``JoinView``; the command line renders them.

The package, along its seams: ``settings`` (VoteSettings, times and bounds; light,
for the command line's defaults), ``messages`` (channels, and each kind of
message, built and parsed in one place), ``tally`` (the ballot box, pure logic),
``voters`` (worker processes and their voters), ``joins`` (the host's answers to
joiners), ``host`` (VoteHost, one method per phase) and ``joiner`` (join_vote).
This module imports none of them, so that reading the settings stays cheap.
"""
