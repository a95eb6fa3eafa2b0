"""idsync.store"""
