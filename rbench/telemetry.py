"""Power, energy and clock telemetry over a case's timed window.

`monitor_for(device)` picks the source for a device. A monitor's `start()` and `stop()` bracket the
timed window (the device idle at both ends); `result(images)` then gives the record's `power` block,
a `telemetry` block and warnings for that window.
Anything that cannot be measured is `unavailable` with its reason, never 0.
"""

from __future__ import annotations

from typing import Any


class Monitor:
    """No telemetry source for this device: every figure is unavailable, with the reason."""

    def __init__(self, device: Any, reason: str = "no power telemetry source for this device"):
        self.device = device
        self.reason = reason

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def result(self, images: int) -> dict[str, Any]:
        return {"power": {"unavailable": True, "reason": self.reason}, "telemetry": None, "warnings": []}

    def close(self) -> None:
        pass


def monitor_for(device: Any) -> Monitor:
    return Monitor(device, f"no power telemetry source for {device.kind} devices")
