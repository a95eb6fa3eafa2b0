"""idsync.sync"""
