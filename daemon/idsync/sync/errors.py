"""Errors of the sync engine, each naming the rule, object and reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong in the rules: where (`user.flows.displayName`), why, and the expression."""

    rule: str
    reason: str
    expression: str | None = None

    def __str__(self) -> str:
        if self.expression is not None:
            return f"{self.rule}: {self.reason} in expression {self.expression!r}"
        return f"{self.rule}: {self.reason}"


class RulesError(Exception):
    """The rules cannot be used; `problems` lists every problem found, not just the first."""

    def __init__(self, origin: str, problems: list[RuleProblem]) -> None:
        self.origin = origin
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid sync rules ({origin}), {len(problems)} problem(s):\n{lines}")


class EvaluationError(Exception):
    """A rule could not be evaluated for one source object; that object is quarantined."""

    def __init__(self, anchor: str, rule: str, reason: str, expression: str | None = None) -> None:
        self.anchor = anchor
        self.rule = rule
        self.reason = reason
        self.expression = expression
        where = f" (expression {expression!r})" if expression else ""
        super().__init__(f"{rule}: {reason}{where}")
