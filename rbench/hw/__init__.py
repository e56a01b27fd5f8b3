"""Everything that touches a vendor library, /proc or /sys: devices, identity, telemetry (see detect.py)."""
