"""idsync.source"""
