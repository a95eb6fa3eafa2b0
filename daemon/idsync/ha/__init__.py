"""idsync.ha"""
