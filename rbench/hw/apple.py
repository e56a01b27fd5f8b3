"""Apple GPUs: the MPS device (torch.mps events where they exist, else host time around a synchronise).

No power telemetry: Apple GPU power is only readable through powermetrics, which needs root.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

from rbench.hw import host
from rbench.hw.base import Device, HostEvent

NO_TELEMETRY = "Apple GPU power is only readable through powermetrics, which needs root; not sampled"


class MpsDevice(Device):
    """Apple GPUs: torch.mps has events in recent releases; otherwise synchronise around host time."""

    kind = "mps"
    torch_type = "mps"

    @property
    def name(self) -> str:
        return f"{host.cpu_model()} GPU (MPS)"

    def synchronize(self) -> None:
        torch.mps.synchronize()

    def event(self) -> Any:
        if hasattr(torch.mps, "Event"):
            return torch.mps.Event(enable_timing=True)
        return HostEvent(self.synchronize)

    def reset_peak_memory(self) -> None:
        host.reset_peak_rss()

    def peak_memory(self) -> dict[str, int | str]:
        return {"allocated": torch.mps.driver_allocated_memory(), "source": "torch.mps (current, not peak)"}

    def release_memory(self) -> None:
        torch.mps.empty_cache()

    def unsupported_precision(self, precision: str) -> str | None:
        if precision == "tf32":
            return super().unsupported_precision(precision)
        return None

    def inventory(self) -> dict[str, Any]:
        return {"driver": {"source": "macOS", "version": platform.mac_ver()[0] or None},
                "gpus": [{"torch_index": 0, "name": self.name, "memory_bytes": host.memory_bytes(),
                          "unified_memory": True}]}
