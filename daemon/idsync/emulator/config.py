"""The emulator's settings: tenant, app credentials, domains, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TENANT = "00000000-0000-4000-8000-000000000001"
DEFAULT_CLIENT_ID = "00000000-0000-4000-8000-0000000000a1"
DEFAULT_CLIENT_SECRET = "idsync-emulator-secret"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCE = "https://graph.microsoft.com"


@dataclass
class EmulatorConfig:
    """Everything `idsync graph-emulator` can be told on its command line.

    `write_budget`/`write_window` is Graph's identity write quota per app+tenant (3,000 per
    150 s); `read_budget`/`read_window` its resource-unit quota (8,000 RU per 10 s for a large
    tenant). A budget of 0 turns that limit off. `replication_delay` keeps new objects invisible
    to reads and references for that many seconds, as Graph's replication lag does.
    """

    tenant_id: str = DEFAULT_TENANT
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    anonymous: bool = False
    domains: list[str] = field(default_factory=lambda: ["example.com"])
    extensions: list[str] = field(default_factory=lambda: ["idsyncAnchor"])
    token_lifetime: float = 3599.0
    write_budget: int = 3000
    write_window: float = 150.0
    read_budget: int = 8000
    read_window: float = 10.0
    delta_page_size: int = 200
    delta_link_limit: int = 500
    delta_token_lifetime: float = 7 * 86400.0
    soft_delete_retention: float = 30 * 86400.0
    shuffle_batch_responses: bool = False
    replication_delay: float = 0.0
    request_log_size: int = 200_000

    @property
    def app_id_nodash(self) -> str:
        """The client id as Graph spells it inside extension property names."""
        return self.client_id.replace("-", "")

    def extension_name(self, short: str) -> str:
        """`idsyncAnchor` -> `extension_<appid>_idsyncAnchor`."""
        return f"extension_{self.app_id_nodash}_{short}"
