"""Tests of the Graph emulator (`idsync graph-emulator`)."""
