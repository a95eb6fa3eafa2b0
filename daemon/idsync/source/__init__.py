"""idsync.source: full and delta import from Active Directory and OpenLDAP into the source space.

The daemon needs only `SourceImporter` (blocking; run it in a worker thread), its settings and
its result; see docs/source.md.
"""

from idsync.source.errors import (
    BadEntry,
    CookieRejected,
    SearchFailed,
    SourceBindFailed,
    SourceError,
    SourceUnavailable,
)
from idsync.source.importer import ImportResult, SourceImporter
from idsync.source.settings import LdapSourceSettings

__all__ = [
    "BadEntry",
    "CookieRejected",
    "ImportResult",
    "LdapSourceSettings",
    "SearchFailed",
    "SourceBindFailed",
    "SourceError",
    "SourceImporter",
    "SourceUnavailable",
]
