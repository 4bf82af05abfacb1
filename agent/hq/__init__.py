"""``dropkit hq``: the reference reconciler that keeps the central ledger and answers every sale
(docs/mqtt.md). :mod:`agent.hq.ledger` is the ledger and its report, :mod:`agent.hq.group` the
sharing of one ledger among instances, :mod:`agent.hq.server` the MQTT side (:func:`run_hq`)."""
