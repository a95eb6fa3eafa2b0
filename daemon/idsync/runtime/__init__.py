"""idsync.runtime"""
