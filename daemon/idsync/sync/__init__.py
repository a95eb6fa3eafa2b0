"""The sync engine: rules → desired state → links → pending exports (see engine.SyncEngine).

Knows nothing of LDAP or HTTP: it reads the source and target spaces the connectors fill and
writes the queue the exporter drains, all through `idsync.store`.
"""
