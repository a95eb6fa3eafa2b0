"""The one error type configuration raises: a list of problems, each naming a TOML path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration.

    `path` is the dotted TOML path of the bad setting (`source.ldap.urls[0]`), or the
    file name for problems with the file itself (missing, unreadable, bad TOML syntax).
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` says every reason found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, path: str, message: str) -> ConfigError:
        """An error with one problem."""
        return cls([ConfigProblem(path, message)])
