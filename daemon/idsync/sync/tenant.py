"""What the sync rules need to know about the tenant: its verified domains and its initial domain.

The target connector reads them (`GET /domains`) and keeps them in the store; the sync engine
reads them from there, so that it knows nothing of HTTP. A user whose userPrincipalName suffix
is not a verified domain cannot be created ("The general format is alias@domain, where domain
must be present in the tenant's collection of verified domains", docs-contrib
api-reference/v1.0/resources/user.md): the rules fall back to the initial domain or quarantine it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

STORE_KEY = "tenant.domains"  # meta key: the domains as the last target import read them


@dataclass(frozen=True)
class TenantDomains:
    """The tenant's verified domains (lower case) and its initial `<name>.onmicrosoft.com`."""

    verified: frozenset[str]
    initial: str | None
    # Domains whose authenticationType is "Federated" (resources/domain.md): their users sign in
    # at the tenant's identity provider. For preflight only: not stored, no part of the fingerprint.
    federated: frozenset[str] = frozenset()

    @classmethod
    def from_graph(cls, domains: Iterable[Mapping[str, Any]]) -> TenantDomains:
        """From `GET /domains` items: `id`, `isVerified`, `isInitial` (docs-contrib
        api-reference/v1.0/resources/domain.md: isInitial is "the initial domain created by
        Microsoft Online Services (companyname.onmicrosoft.com). There is only one")."""
        verified = set()
        federated = set()
        initial = None
        for d in domains:
            name = str(d.get("id") or "").lower()
            if not name:
                continue
            if str(d.get("authenticationType") or "").lower() == "federated":
                federated.add(name)
            if d.get("isVerified") is True:
                verified.add(name)
            if d.get("isInitial") is True:
                initial = name
        if initial is None:
            # A listing without isInitial (a proxy's $select, an emulator): the initial domain is
            # the one "created by Microsoft Online Services (companyname.onmicrosoft.com)".
            initial = next((d for d in sorted(verified) if d.endswith(".onmicrosoft.com")), None)
        return cls(frozenset(verified), initial, frozenset(federated))

    def to_json(self) -> str:
        return orjson.dumps({"verified": sorted(self.verified), "initial": self.initial}).decode()

    @classmethod
    def from_json(cls, text: str) -> TenantDomains:
        d = orjson.loads(text)
        return cls(frozenset(str(v).lower() for v in d.get("verified", [])), d.get("initial"))

    def fingerprint(self) -> str:
        """Changes when a domain is verified or removed (the rules must then run again)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def is_verified(self, domain: str) -> bool:
        return domain.lower() in self.verified

    def is_federated(self, domain: str) -> bool:
        return domain.lower() in self.federated
