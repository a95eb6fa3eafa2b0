"""Sign-in: the initial password of the users idsync creates, and Entra ID's rules for it.

Graph requires a `passwordProfile` to create a user and never returns the password, so it is
set on create only and can never be compared or updated. `[user.password] initial` is either
`"random"` (a random password nobody knows: sign-in goes through federation, self-service
password reset or a Temporary Access Pass) or a CEL expression over the source object.

The expression's result is a secret: it is computed at export time, for the creates of one
batch, from the source object in the store; it is never written to the desired state, the
pending-export queue, the journal or a log, and previews show it redacted.
"""

from __future__ import annotations

from collections.abc import Sequence

from idsync.model import InitialPassword
from idsync.store import source_space
from idsync.store.db import Store
from idsync.sync.errors import EvaluationError
from idsync.sync.evaluate import Evaluator
from idsync.sync.password_policy import password_problem
from idsync.sync.rules import Rules


class InitialPasswords:
    """The exporter's source of passwordProfiles (target.export.PasswordSource), from the rules."""

    def __init__(self, store: Store, rules: Rules) -> None:
        self.store = store
        self.rules = rules

    def profiles(self, anchors: Sequence[str]) -> dict[str, InitialPassword]:
        """The passwordProfile of each user about to be created, by source anchor."""
        rule = self.rules.user.password
        if rule.initial is None:
            return {a: InitialPassword(None, rule.force_change) for a in anchors}
        with self.store.transaction() as conn:
            objects = source_space.get_many(conn, anchors)
        evaluator = Evaluator(self.rules)
        out: dict[str, InitialPassword] = {}
        for a in anchors:
            obj = objects.get(a)
            if obj is None:
                out[a] = InitialPassword(None, rule.force_change, "the source object is gone")
                continue
            try:
                password = evaluator.initial_password(a, obj.dn, obj.attrs)
            except EvaluationError as exc:
                out[a] = InitialPassword(None, rule.force_change, str(exc))
                continue
            assert password is not None  # the rule has an expression
            problem = password_problem(password)
            if problem is not None:
                why = f"user.password.initial: its password breaks Entra ID's password rules: {problem}"
                out[a] = InitialPassword(None, rule.force_change, why)
                continue
            out[a] = InitialPassword(password, rule.force_change)
        return out
