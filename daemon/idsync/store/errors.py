"""Errors raised by the state store, each naming what is wrong and what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of state-store errors."""


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached or refused the connection."""


class SchemaTooNew(StoreError):
    """The instance schema was migrated by a newer idsync than this one."""

    def __init__(self, schema: str, db_version: int, code_version: int) -> None:
        super().__init__(
            f"schema {schema!r} is at version {db_version}, but this idsync only knows versions up to "
            f"{code_version}: upgrade idsync on this node (or point it at another schema)"
        )
        self.schema = schema
        self.db_version = db_version
        self.code_version = code_version


class MigrationError(StoreError):
    """A migration file failed to apply; the transaction was rolled back."""


class MigrationMismatch(StoreError):
    """The schema records a migration this build does not ship as it was applied: a shipped
    migration was edited or replaced, or the schema was migrated by a foreign build."""

    def __init__(self, schema: str, version: int, recorded: str, shipped: str) -> None:
        super().__init__(
            f"schema {schema!r}: migration {version:04d} was applied as {recorded}, but this build ships "
            f"{shipped}. Shipped migrations are immutable: restore the original file and put the change "
            "in a new migration (idsync migrate --status lists applied and pending ones)"
        )
        self.schema = schema
        self.version = version
