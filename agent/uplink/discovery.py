"""Home Assistant MQTT discovery: retained configs that make a kit's power show up by itself.

Each config points at the kit's ``telemetry/power`` for its state and at ``status`` for its
availability, so Home Assistant greys the kit out when its last will says ``offline``.

    >>> topic, payload = discovery_messages("dropkit", "kit-1")[0]
    >>> topic
    'homeassistant/sensor/dropkit_kit-1/battery/config'
"""

from __future__ import annotations

import json

# (object id, name, value template, unit, device class)
SENSORS = [
    ("battery", "Battery", "{{ value_json.ups.percent if value_json.ups else none }}", "%",
     "battery"),
    ("feeding", "Feeding source", "{{ value_json.feeding }}", None, None),
    ("power_state", "Power state", "{{ value_json.state }}", None, None),
    ("mode", "Mode", "{{ value_json.mode }}", None, None),
    ("queue_depth", "Orders waiting", "{{ value_json.queue_depth }}", None, None),
]


def discovery_messages(prefix: str, kit_id: str) -> list[tuple[str, str]]:
    """``(topic, retained payload)`` for each sensor of the kit."""
    base = f"{prefix}/{kit_id}"
    device = {"identifiers": [f"dropkit_{kit_id}"], "name": f"Drop kit {kit_id}",
              "manufacturer": "dropkit", "model": "drop kit"}
    messages = []
    for object_id, name, template, unit, device_class in SENSORS:
        config = {"name": name, "unique_id": f"dropkit_{kit_id}_{object_id}",
                  "state_topic": f"{base}/telemetry/power", "value_template": template,
                  "availability_topic": f"{base}/status", "payload_available": "online",
                  "payload_not_available": "offline", "device": device}
        if unit:
            config["unit_of_measurement"] = unit
        if device_class:
            config["device_class"] = device_class
        messages.append((f"homeassistant/sensor/dropkit_{kit_id}/{object_id}/config",
                         json.dumps(config, separators=(",", ":"))))
    return messages
