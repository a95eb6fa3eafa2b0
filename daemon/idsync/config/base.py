"""What every configuration section shares: strictness, path handling, secret access."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo

from idsync.config.secrets import SecretSource, read_secret

BASE_DIR_CONTEXT = "base_dir"


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    # Relative paths are relative to the configuration file, not the working directory.
    value = value.expanduser()
    base = (info.context or {}).get(BASE_DIR_CONTEXT)
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A file path; relative paths resolve against the configuration file's directory."""

_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")


def _credential_name(value: str) -> str:
    if not _CREDENTIAL_NAME.fullmatch(value):
        raise ValueError("must be a systemd credential name (letters, digits, '_', '-', '.', '@'; no '/')")
    return value


CredentialName = Annotated[str, AfterValidator(_credential_name)]
"""The name of a systemd credential, looked up in `$CREDENTIALS_DIRECTORY`."""

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def inline_secret(name: str) -> Any:
    """A field holding an inline secret under the TOML key `name` (discouraged)."""
    return Field(default=None, alias=name, repr=False)


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    _credentials_dir: Path | None = PrivateAttr(default=None)

    def secret_sources(self) -> list[SecretSource]:
        """The secrets this section can reference (none by default)."""
        return []

    def _read_secret(self, src: SecretSource) -> str:
        return read_secret(src, self._credentials_dir)


__all__ = [
    "BASE_DIR_CONTEXT",
    "ConfigPath",
    "CredentialName",
    "PositiveSeconds",
    "SecretStr",
    "Section",
    "inline_secret",
]
