"""`GraphTarget`: the target connector as the daemon sees it — one client, import and export."""

from __future__ import annotations

from idsync.config.target import GraphSettings
from idsync.fencing import Fence
from idsync.model import OBJECT_TYPES, ObjectType
from idsync.store.db import Store
from idsync.target.client import GraphClient
from idsync.target.delta import DeltaImporter, ImportResult
from idsync.target.export import Exporter, PasswordSource
from idsync.target.schema import DEFAULT_GROUP_ATTRIBUTES, DEFAULT_USER_ATTRIBUTES, USER_ANCHOR, TargetSchema

DEFAULT_GROUP_ANCHOR_NAME = "idsyncSourceAnchor"


def default_group_anchor(settings: GraphSettings) -> str:
    """The group anchor extension: the configured one, else `extension_<client id>_idsyncSourceAnchor`."""
    if settings.anchor_extension_attribute:
        return settings.anchor_extension_attribute
    app = (settings.client_id or "").replace("-", "")
    return f"extension_{app}_{DEFAULT_GROUP_ANCHOR_NAME}"


class GraphTarget:
    """Microsoft Entra ID through Graph: import the target space, export pending operations.

    One instance per process (it owns the connection pool, the token cache and the write budget);
    `close()` it at shutdown. `user_attributes` / `group_attributes` are the managed attributes and
    `user_anchor` / `group_anchor` the anchor attributes — pass the rules' own
    (`rules.anchor_attribute(t)`), so that the import and the sync engine agree on the anchor.
    """

    def __init__(
        self,
        settings: GraphSettings,
        *,
        node: str = "standalone",
        user_attributes: tuple[str, ...] = DEFAULT_USER_ATTRIBUTES,
        group_attributes: tuple[str, ...] = DEFAULT_GROUP_ATTRIBUTES,
        group_anchor: str | None = None,
        user_anchor: str = USER_ANCHOR,
        client: GraphClient | None = None,
        manager: bool = False,
    ) -> None:
        self.settings = settings
        self.schema = TargetSchema(
            group_anchor=group_anchor or default_group_anchor(settings),
            user_attributes=tuple(user_attributes),
            group_attributes=tuple(group_attributes),
            user_anchor=user_anchor,
            manager=manager,
        )
        self.client = client or GraphClient(settings, node=node)
        self.importer = DeltaImporter(self.client, self.schema)

    async def import_delta(self, store: Store, types: tuple[ObjectType, ...] = OBJECT_TYPES) -> ImportResult:
        """Bring the target space up to date (delta rounds; full round when there is no valid link)."""
        return await self.importer.run(store, types)

    def exporter(self, store: Store, fence: Fence, passwords: PasswordSource | None = None) -> Exporter:
        """An exporter writing under `fence` (leadership: node and epoch); `passwords` gives user
        creates their passwordProfile (a random password when None)."""
        return Exporter(self.client, store, fence, self.schema, passwords)

    async def close(self) -> None:
        """Close connections and credentials."""
        await self.client.close()

    async def __aenter__(self) -> GraphTarget:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
