"""Power policy, NUT style: which source feeds the kit, how much battery is left, when to stop.

One purpose per module, each imported only by what needs it (a Pi Zero starts faster so):

- :mod:`agent.power.sensors`: the drivers as the monitor reads them, built from ``[power]``
  (:func:`~agent.power.sensors.build_sensors`, :class:`~agent.power.sensors.LazySMBus`);
- :mod:`agent.power.status`: :class:`~agent.power.status.PowerStatus`, the ``telemetry/power``
  payload (its schema: ``agent.schemas.load("telemetry-power")``);
- :mod:`agent.power.debounce`: :class:`~agent.power.debounce.Debounced`;
- :mod:`agent.power.shutdown`: the shutdown steps and the sequence that runs them;
- :mod:`agent.power.monitor`: :class:`~agent.power.monitor.PowerMonitor`, the policy;
- :mod:`agent.power.service`: the monitor as the daemon runs it.

``docs/power.md`` is the contract: states, thresholds, the shutdown sequence, the payloads.
"""
