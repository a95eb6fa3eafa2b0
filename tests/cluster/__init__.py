"""Real `idsync run` processes and a Graph emulator process, for HA tests, chaos runs and the demo."""
