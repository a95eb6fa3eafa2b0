"""idsync.emulator"""
