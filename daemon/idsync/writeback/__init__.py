"""Writeback to on-premises AD: ms-DS-ConsistencyGuid on synced users, cloud groups into an OU.

`plan` computes the AD operations (every node, every cycle: staging nodes keep them warm),
`directory` reads and writes AD over LDAP, `export` runs the queue's AD rows on the leader,
fenced like the Graph export.
"""
