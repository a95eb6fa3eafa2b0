"""idsync's configuration: one TOML file, `IDSYNC_*` overrides, secrets by reference.

Use `load_config(path)`; it returns an immutable `Config` or raises `ConfigError`
whose `problems` each name a TOML path and the reason.
"""

from idsync.config.errors import ConfigError, ConfigProblem
from idsync.config.ha import HaSettings, ZooKeeperSettings
from idsync.config.load import CONFIG_ENV, DEFAULT_CONFIG_PATH, config_path, load_config, parse_config
from idsync.config.model import Config
from idsync.config.secrets import SecretSource
from idsync.config.service import AdminSettings, LogSettings, NodeSettings, StoreSettings, SyncSettings
from idsync.config.source import LdapSettings, SourceSettings
from idsync.config.target import GraphSettings, TargetSettings

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "AdminSettings",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "GraphSettings",
    "HaSettings",
    "LdapSettings",
    "LogSettings",
    "NodeSettings",
    "SecretSource",
    "SourceSettings",
    "StoreSettings",
    "SyncSettings",
    "TargetSettings",
    "ZooKeeperSettings",
    "config_path",
    "load_config",
    "parse_config",
]
