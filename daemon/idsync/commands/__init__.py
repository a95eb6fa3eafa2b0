"""Sub-commands of the `idsync` CLI (see idsync.cli)."""
