"""``dropkit drill``: the field's bad days, rehearsed on the simulators, with a timeline and a
verdict.

Each drill starts the real daemon (``dropkit sim`` in a subprocess, on a free loopback port,
with its state in a directory of its own), drives it only as the field would (the HTTP API, the
staff calls and the staff page's simulator controls, with the staff token), and says what it
did and saw, second by second, then ``PASS`` or ``FAIL`` with the reasons. Afterwards it reads
the kit's store for what only the store can show (the receipt chain, the outbox), as
``dropkit receipts verify`` would. docs/drills.md describes each drill.

:mod:`agent.ops.drill.runner` runs a drill (its session, timeline and verdict);
:mod:`agent.ops.drill.scenarios` holds the drills.
"""
