"""The emulator's settings: tenant, app credentials and roles, domains, limits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

DEFAULT_TENANT = "00000000-0000-4000-8000-000000000001"
DEFAULT_CLIENT_ID = "00000000-0000-4000-8000-0000000000a1"
DEFAULT_CLIENT_SECRET = "idsync-emulator-secret"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCE = "https://graph.microsoft.com"
# the choices of EmulatorConfig.deleted_immutable_id
DELETED_IMMUTABLE_ID = ("free", "reserved")

# The application permissions idsync needs (docs/graph-emulator.md lists why each one):
# users and groups, member links, registering its own directory extension (OwnedBy: only on
# applications the app owns), reading the extension catalogue, verified domains and role holders.
DEFAULT_ROLES: tuple[str, ...] = (
    "User.ReadWrite.All",
    "Group.ReadWrite.All",
    "GroupMember.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.Read.All",
    "Domain.Read.All",
    "RoleManagement.Read.Directory",
)


@dataclass
class ClientSpec:
    """One app registration allowed to get tokens: its credentials and the application
    permissions (the token's `roles` claim) an admin consented to."""

    client_id: str
    client_secret: str
    roles: list[str] = field(default_factory=lambda: list(DEFAULT_ROLES))
    display_name: str = ""


@dataclass
class EmulatorConfig:
    """Everything `idsync graph-emulator` can be told on its command line.

    `write_budget`/`write_window` is Graph's identity write quota per app+tenant (3,000 per
    150 s); `read_budget`/`read_window` its resource-unit quota (8,000 RU per 10 s for a large
    tenant). A budget of 0 turns that limit off.

    `preregister_extensions` registers directory extensions (String, on User and Group) on the
    default client's application at start, as if an admin had done it; by default none exist
    and a client registers its own through `POST /applications/{id}/extensionProperties`.

    Replication lag: with `replication_lag_max` > 0 a new or changed object becomes visible to
    reads, `$filter` and delta only after a random lag in [min, max] seconds (RNG seeded with
    `replication_seed`); `replication_delay` S is the shorthand min = max = S.
    `batch_random_order` (None: on exactly when the lag is) runs `$batch` items without
    `dependsOn` in a random order.
    """

    tenant_id: str = DEFAULT_TENANT
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    client_roles: list[str] = field(default_factory=lambda: list(DEFAULT_ROLES))
    extra_clients: list[ClientSpec] = field(default_factory=list)
    anonymous: bool = False
    domains: list[str] = field(default_factory=lambda: ["example.com"])
    # Verified domains whose authenticationType is "Federated" (sign-in at the tenant's identity
    # provider, resources/domain.md); the others are "Managed".
    federated_domains: list[str] = field(default_factory=list)
    preregister_extensions: list[str] = field(default_factory=list)
    token_lifetime: float = 3599.0
    write_budget: int = 3000
    write_window: float = 150.0
    read_budget: int = 8000
    read_window: float = 10.0
    # x-ms-throttle-limit-percentage on normal responses: "Returned only when the application
    # consumed more than 0.8 of its limit. The value ranges from 0.8 to 1.8" (concepts/
    # throttling-limits.md, identity and access, "Regular responses"). Microsoft is silent on the
    # figure's precision, and users report not seeing it at all before a 429 (Microsoft Q&A
    # 1001089): both configurable, `throttle_warning=False` leaves the header out.
    throttle_warning: bool = True
    throttle_warning_at: float = 0.8
    throttle_warning_decimals: int = 2
    delta_page_size: int = 200
    delta_link_limit: int = 500
    delta_token_lifetime: float = 7 * 86400.0
    soft_delete_retention: float = 30 * 86400.0
    shuffle_batch_responses: bool = False
    batch_random_order: bool | None = None
    replication_delay: float = 0.0
    replication_lag_min: float = 0.0
    replication_lag_max: float = 0.0
    replication_seed: int = 0
    # an unregistered extension in $select/$filter: "error" (400) or "ignore" (left out / matches
    # nothing); Microsoft documents neither
    unregistered_extension_query: str = "error"
    # how users/delta shows a manager taken away: "removed" (a `manager@delta` entry for the old
    # manager marked `@removed`, as members@delta does) or "empty" (`manager@delta: []`); Microsoft
    # documents neither (concepts/delta-query-overview.md only says relationships are annotations)
    manager_removed_delta: str = "removed"
    # Does a soft-deleted user keep its onPremisesImmutableId taken, so that creating another user
    # with it conflicts until the deleted one is restored or purged? Microsoft's pages do not say
    # (user-delete.md, directory-deleteditems-restore.md): "free" (default) lets the create
    # through, and restoring the deleted one then conflicts; "reserved" refuses the create.
    deleted_immutable_id: str = "free"
    request_log_size: int = 200_000

    @property
    def app_id_nodash(self) -> str:
        """The client id as Graph spells it inside extension property names."""
        return self.client_id.replace("-", "")

    def extension_name(self, short: str, app_id: str | None = None) -> str:
        """`idsyncAnchor` -> `extension_<appid>_idsyncAnchor` (the default client's app unless
        `app_id` is given)."""
        return f"extension_{(app_id or self.client_id).replace('-', '')}_{short}"

    def clients(self) -> list[ClientSpec]:
        """Every app that may get tokens, the default one first."""
        main = ClientSpec(self.client_id, self.client_secret, list(self.client_roles), "idsync")
        return [main, *self.extra_clients]

    def lag_bounds(self) -> tuple[float, float]:
        """(min, max) replication lag in seconds; (0, 0) when off."""
        if self.replication_lag_max > 0:
            return max(0.0, self.replication_lag_min), self.replication_lag_max
        if self.replication_delay > 0:
            return self.replication_delay, self.replication_delay
        return 0.0, 0.0

    def random_batch_order(self) -> bool:
        """Whether `$batch` items without dependsOn run in a random order."""
        if self.batch_random_order is not None:
            return self.batch_random_order
        return self.lag_bounds()[1] > 0


def service_principal_id(client_id: str) -> str:
    """The object id of a client's service principal (the token's `oid`), stable across runs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, client_id))


def application_object_id(client_id: str) -> str:
    """The object id of a client's application object (`/applications/{id}`), stable across runs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"application:{client_id}"))
