"""Secret references: a file, a systemd credential, or (discouraged) an inline value.

Secrets are read when used, not when the configuration is loaded, so a rotated file
takes effect at the next connection and nothing secret lives in the `Config` object
longer than needed. Values are stripped of surrounding whitespace (files end in newlines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from idsync.config.errors import ConfigError, ConfigProblem

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


@dataclass(frozen=True)
class SecretSource:
    """Where one secret setting comes from; `path` is its TOML path without suffix."""

    path: str
    inline: SecretStr | None = None
    file: Path | None = None
    credential: str | None = None

    @property
    def configured(self) -> bool:
        """True when any of the three ways is set."""
        return self.inline is not None or self.file is not None or self.credential is not None

    def setting(self) -> str:
        """The TOML path of the way actually used (`..._file`, `..._credential` or inline)."""
        if self.file is not None:
            return f"{self.path}_file"
        if self.credential is not None:
            return f"{self.path}_credential"
        return self.path

    def choices(self) -> str:
        """The setting names an operator may use, for messages."""
        name = self.path.rsplit(".", 1)[-1]
        return f"{name}_file, {name}_credential or {name}"


def _read(path: Path, setting: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError.single(setting, f"{path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError.single(setting, f"{path} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError.single(setting, f"{path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError.single(setting, f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError.single(setting, f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError.single(setting, f"{path} is empty")
    return value


def read_secret(src: SecretSource, credentials_dir: Path | None) -> str:
    """Return the secret's value, or raise `ConfigError` naming the setting and the reason."""
    if src.file is not None:
        return _read(src.file, f"{src.path}_file")
    if src.credential is not None:
        setting = f"{src.path}_credential"
        if credentials_dir is None:
            raise ConfigError.single(
                setting,
                f"credential {src.credential!r} cannot be found: ${CREDENTIALS_ENV} is not set "
                "(use LoadCredential= or SetCredentialEncrypted= in the systemd unit)",
            )
        return _read(credentials_dir / src.credential, setting)
    if src.inline is not None:
        value = src.inline.get_secret_value().strip()
        if not value:
            raise ConfigError.single(src.path, "is empty")
        return value
    raise ConfigError.single(f"{src.path}_file", f"no secret configured (set {src.choices()})")


def check_secret(src: SecretSource, credentials_dir: Path | None) -> ConfigProblem | None:
    """The problem reading a configured secret, or None if it reads (the value is discarded)."""
    if not src.configured:
        return None
    try:
        read_secret(src, credentials_dir)
    except ConfigError as exc:
        return exc.problems[0]
    return None


def exclusive(src: SecretSource) -> ConfigProblem | None:
    """A problem when more than one way of giving the same secret is set."""
    given = [
        name
        for name, value in (
            (f"{src.path}_file", src.file),
            (f"{src.path}_credential", src.credential),
            (src.path, src.inline),
        )
        if value is not None
    ]
    if len(given) > 1:
        names = ", ".join(g.rsplit(".", 1)[-1] for g in given)
        return ConfigProblem(src.path, f"set only one of {names}")
    return None
