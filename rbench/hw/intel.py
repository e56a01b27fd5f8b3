"""Intel GPUs: the XPU device through torch.xpu and its events; identity from torch.xpu's properties.

No power telemetry yet: Level Zero Sysman / xpu-smi is not integrated, and `NO_TELEMETRY` says so.
"""

from __future__ import annotations

from typing import Any

import torch

from rbench.hw.base import AcceleratorDevice, unavailable

NO_TELEMETRY = "no power telemetry for Intel GPUs yet (Level Zero Sysman / xpu-smi is not integrated)"


class XpuDevice(AcceleratorDevice):
    """Intel GPUs through torch.xpu and its events."""

    kind = "xpu"
    torch_type = "xpu"

    def properties(self) -> dict[str, Any]:
        return _xpu_properties(self.index)

    def inventory(self) -> dict[str, Any]:
        gpus = [{"torch_index": i, "name": torch.xpu.get_device_name(i), **_xpu_properties(i)}
                for i in range(torch.xpu.device_count())]
        drivers = {g.get("driver_version") for g in gpus} - {None}
        driver = ({"source": "torch.xpu", "version": ", ".join(sorted(drivers))} if drivers
                  else unavailable("torch.xpu does not report the driver version"))
        return {"driver": driver, "gpus": gpus}


def _xpu_properties(index: int) -> dict[str, Any]:
    p = torch.xpu.get_device_properties(index)
    fields = {"memory_bytes": "total_memory", "driver_version": "driver_version", "vendor": "vendor",
              "platform": "platform_name", "execution_units": "gpu_eu_count", "compute_units": "max_compute_units"}
    return {k: getattr(p, attr, None) for k, attr in fields.items()}
