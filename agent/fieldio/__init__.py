"""Field I/O: what the kit's devices mean to it.

The drivers in :mod:`hw` report facts on the event loop; this package decides what they mean.
Its effects are the agent's own coroutines and event hub, injected, so it keeps no state of the
kit. Each part is imported only by what uses it (evdev, gpiozero and python-escpos stay out of
a start that does not need them):

- :mod:`agent.fieldio.scans`: scans routed to the staff page (their meaning is
  :mod:`agent.core.scans`);
- :mod:`agent.fieldio.panel`: what the panel's buttons do and what its LEDs show;
- :mod:`agent.fieldio.printing`: the print queue;
- :mod:`agent.fieldio.service`: the devices as the daemon runs them (real, or the simulators of
  ``dropkit sim``).
"""
