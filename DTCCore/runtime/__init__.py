"""Runtime: devices, numeric precision and CPU threads."""
