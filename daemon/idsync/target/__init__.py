"""idsync.target"""
