"""idsync: a highly available AD/LDAP to Microsoft Entra ID synchronization daemon."""

__version__ = "0.1.0"
