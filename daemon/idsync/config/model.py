"""The whole configuration file as one validated, immutable object."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from idsync.config.base import Section
from idsync.config.ha import HaSettings
from idsync.config.secrets import SecretSource
from idsync.config.service import (
    AdminSettings,
    LogSettings,
    NodeSettings,
    StoreSettings,
    SyncSettings,
    default_node_name,
    default_schema,
)
from idsync.config.source import SourceSettings
from idsync.config.target import TargetSettings
from idsync.config.writeback import WritebackSettings


class Config(Section):
    """The root of `idsync.toml`. Build it with `load_config()`, not directly."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    store: StoreSettings
    source: SourceSettings
    target: TargetSettings = Field(default_factory=TargetSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    ha: HaSettings
    admin: AdminSettings = Field(default_factory=AdminSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)

    @model_validator(mode="before")
    @classmethod
    def _default_schema(cls, data: Any) -> Any:
        # The schema default depends on the node name, which may itself be defaulted.
        if not isinstance(data, dict):
            return data
        store = data.get("store", {})
        if isinstance(store, dict) and "schema" not in store:
            node = data.get("node", {})
            name = node.get("name") if isinstance(node, dict) else None
            if not isinstance(name, str) or not name:
                name = default_node_name()
                data = {**data, "node": {**(node if isinstance(node, dict) else {}), "name": name}}
            data = {**data, "store": {**store, "schema": default_schema(name)}}
        return data

    def sections(self) -> list[Section]:
        """Every section object, nested ones included."""
        return [
            self.node,
            self.store,
            self.source,
            self.source.ldap,
            self.target,
            self.target.graph,
            self.sync,
            self.ha,
            self.ha.zookeeper,
            self.admin,
            self.log,
            self.writeback,
        ]

    def secret_sources(self) -> list[SecretSource]:
        """Every secret the configuration can reference."""
        return [src for section in self.sections() for src in section.secret_sources()]
