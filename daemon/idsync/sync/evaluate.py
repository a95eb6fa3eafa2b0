"""Applying the rules to one source object: is it in scope, and what should the target hold?

Null semantics follow Entra Connect: a source attribute that is absent is null, and an expression
that fails because one of the attributes it reads is null yields null (the target attribute is
cleared) instead of an error. Any other failure is an EvaluationError for that object alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cel

from idsync.sync.errors import EvaluationError
from idsync.sync.functions import FUNCTIONS
from idsync.sync.password_policy import REDACTED, describe
from idsync.sync.rules import RANDOM, Expression, Rules, TypeRules, normalize_dn
from idsync.sync.targets import REQUIRED
from idsync.sync.tenant import TenantDomains

UPN = "userPrincipalName"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The rules' verdict on one object: out of scope, or in scope with its desired attributes."""

    in_scope: bool
    attrs: Mapping[str, Any] | None = None
    target_anchor: str | None = None
    notice: str | None = None  # what the rules adjusted for the tenant (a UPN fallback), for operators
    manager: str | None = None  # users: the manager's DN the `manager` rule gave (None = no manager)


OUT_OF_SCOPE = Outcome(False)


@dataclass(frozen=True, slots=True)
class PilotScope:
    """What `[<type>.scope] member_of` needs: the direct members of the pilot groups found in the
    source (anchors, and `dn:<normalized DN>` for references not resolved yet), and the pilot
    groups that were not found (not imported, or deleted)."""

    members: frozenset[str] = frozenset()
    missing: tuple[str, ...] = ()

    def has(self, anchor: str, dn: str) -> bool:
        return anchor in self.members or f"dn:{normalize_dn(dn)}" in self.members

    def fingerprint(self) -> list[str]:
        """What a sync remembers to find, next cycle, whose pilot membership changed."""
        return sorted(self.members) + [f"missing:{m}" for m in self.missing]


def pilot_scope(groups: Mapping[str, tuple[str, Sequence[str]]], dns: Sequence[str]) -> PilotScope:
    """PilotScope from the pilot groups found (lower-case DN → (anchor, member references))."""
    found = {normalize_dn(dn): refs for dn, (_, refs) in groups.items()}
    members = {
        f"dn:{normalize_dn(r[3:])}" if r.startswith("dn:") else r for refs in found.values() for r in refs
    }
    return PilotScope(frozenset(members), tuple(d for d in dns if d not in found))


@dataclass(frozen=True, slots=True)
class Step:
    """One rule applied to one object, for `idsync preview`: the rule, what it reads, what it gave."""

    rule: str  # "user.scope.include", "user.flows.department", …
    expression: str | None
    result: Any
    note: str = ""  # "in scope", "out of scope: …", "null in, null out", …


class Evaluator:
    """Evaluates compiled rules; one instance per thread (it reuses one CEL context)."""

    def __init__(self, rules: Rules, tenant: TenantDomains | None = None) -> None:
        self.rules = rules
        # The tenant's domains (None until the target connector has read them: no UPN check).
        self.tenant = tenant
        # Per type with `scope.member_of`: the pilot groups' members (set by whoever evaluates:
        # the sync engine from the source space, preflight from its scan).
        self.pilot: dict[str, PilotScope] = {}
        self._ctx = cel.Context(functions=dict(FUNCTIONS))
        self._single: dict[str, tuple[str, ...]] = {}
        self._multi: dict[str, tuple[str, ...]] = {}
        # The names the CEL context needs: those read by an expression that is not a direct copy
        # (converting values into the context is most of an object's cost).
        self._cel_single: dict[str, tuple[str, ...]] = {}
        for t in ("user", "group"):
            tr = rules.of(t)
            exprs = [f.expression for f in tr.flows]
            if tr.manager is not None:
                exprs.append(tr.manager)
            if tr.scope.condition is not None:
                exprs.append(tr.scope.condition)
            if tr.password.initial is not None:
                exprs.append(tr.password.initial)
            self._single[t] = tuple(dict.fromkeys(n for e in exprs for n in e.single))
            self._cel_single[t] = tuple(dict.fromkeys(n for e in exprs if e.direct is None for n in e.single))
            self._multi[t] = tuple(dict.fromkeys(n for e in exprs for n in e.multi))

    def evaluate(
        self,
        anchor: str,
        object_type: str,
        dn: str,
        attrs: Mapping[str, Sequence[str]],
        trace: list[Step] | None = None,
    ) -> Outcome:
        """Scope and flows for one live source object; raises EvaluationError naming the rule.

        With `trace`, each rule's result is appended to it as it is applied (`idsync preview`):
        the same code path as the sync, so the preview cannot disagree with it.
        """
        tr = self.rules.of(object_type)
        t = object_type
        if not tr.enabled:
            if trace is not None:
                trace.append(
                    Step(f"{t}.enabled", None, False, "out of scope: the rules do not sync this type")
                )
            return OUT_OF_SCOPE
        if not self._dn_in_scope(tr, dn):
            if trace is not None:
                bases = "include " + ", ".join(tr.scope.include) if tr.scope.include else ""
                bases += ("; " if bases else "") + (
                    "exclude " + ", ".join(tr.scope.exclude) if tr.scope.exclude else ""
                )
                trace.append(Step(f"{t}.scope", bases, False, "out of scope: the DN is outside the scope"))
            return OUT_OF_SCOPE
        if trace is not None and (tr.scope.include or tr.scope.exclude):
            trace.append(
                Step(f"{t}.scope", ", ".join(tr.scope.include + tr.scope.exclude), True, "DN in scope")
            )
        if tr.scope.filter is not None:
            matched = tr.scope.filter.matches(attrs)
            if trace is not None:
                note = "matches" if matched else "out of scope: the filter does not match"
                trace.append(Step(f"{t}.scope.filter", tr.scope.filter.text, matched, note))
            if not matched:
                return OUT_OF_SCOPE
        if tr.scope.member_of:
            inside = self._in_pilot(tr, anchor, dn)
            if trace is not None:
                note = "a direct member" if inside else "out of scope: not a direct member of the pilot group"
                trace.append(Step(f"{t}.scope.member_of", ", ".join(tr.scope.member_of), inside, note))
            if not inside:
                return OUT_OF_SCOPE
        # Referenced names are looked up as written and in lower case (imported names are lower).
        single: dict[str, Any] = {}
        for name in self._single[object_type]:
            vals = attrs.get(name) or attrs.get(name.lower())
            single[name] = vals[0] if vals else None
        multi = {n: list(attrs.get(n) or attrs.get(n.lower()) or ()) for n in self._multi[object_type]}
        cel_single = {n: single[n] for n in self._cel_single[object_type]}
        self._ctx.update(
            {"source": cel_single, "values": multi, "anchor": anchor, "dn": dn, "object_type": object_type}
        )
        if tr.scope.condition is not None:
            verdict = self._run(tr.scope.condition, anchor, single, multi)
            if trace is not None:
                note = "in scope" if verdict is True else "out of scope: the condition is not true"
                trace.append(Step(tr.scope.condition.rule, tr.scope.condition.text, verdict, note))
            if verdict is not True and verdict is not None and verdict is not False:
                raise EvaluationError(
                    anchor,
                    tr.scope.condition.rule,
                    f"must give true or false, gave {verdict!r}",
                    tr.scope.condition.text,
                )
            if verdict is not True:
                return OUT_OF_SCOPE
        out: dict[str, Any] = {}
        for flow in tr.flows:
            expr = flow.expression
            if expr.direct is not None:  # a copy: the value is a string or null (no CEL call)
                value = single[expr.direct]
                out[flow.attribute] = value if value != "" else None
            else:
                out[flow.attribute] = _json_value(self._run(expr, anchor, single, multi))
            if trace is not None:
                trace.append(Step(expr.rule, expr.text, out[flow.attribute]))
        self._check_required(tr, anchor, out)
        if trace is not None and tr.password.configured:
            trace.append(self._password_step(tr, anchor, single, multi))
        notice = self._check_upn(tr, anchor, out) if object_type == "user" else None
        if notice and trace is not None:
            trace.append(Step(f"{t}.upn_unverified", tr.upn_unverified, out.get(UPN), notice))
        target_anchor = out.get(tr.anchor_attribute)
        if not isinstance(target_anchor, str) or not target_anchor:
            raise EvaluationError(
                anchor,
                f"{object_type}.flows.{tr.anchor_attribute}",
                f"the anchor attribute must be a non-empty string, got {target_anchor!r}",
            )
        manager = self._manager(tr, anchor, single, multi, trace)
        return Outcome(True, out, target_anchor, notice, manager)

    def _manager(
        self,
        tr: TypeRules,
        anchor: str,
        single: Mapping[str, Any],
        multi: Mapping[str, list[str]],
        trace: list[Step] | None,
    ) -> str | None:
        """The manager reference (a DN) the `manager` rule gives, or None."""
        if tr.manager is None:
            return None
        ref = _json_value(self._run(tr.manager, anchor, single, multi))
        if trace is not None:
            trace.append(Step(tr.manager.rule, tr.manager.text, ref, "the manager's DN (a reference)"))
        if ref is None or ref == "":
            return None
        if not isinstance(ref, str):
            raise EvaluationError(anchor, tr.manager.rule, f"must give a DN (a string) or null, gave {ref!r}")
        return ref

    def _check_upn(self, tr: TypeRules, anchor: str, out: dict[str, Any]) -> str | None:
        """A UPN whose suffix the tenant has not verified: fall back to the initial domain (Entra
        Connect's behaviour) or quarantine, as `upn_unverified` says. Returns the notice."""
        upn = out.get(UPN)
        if self.tenant is None or not isinstance(upn, str) or "@" not in upn:
            return None
        local, suffix = upn.rsplit("@", 1)
        if self.tenant.is_verified(suffix):
            return None
        rule = f"{tr.object_type}.flows.{UPN}"
        why = f"UPN suffix {suffix} of {upn} is not a verified domain of the tenant"
        if tr.upn_unverified == "quarantine":
            raise EvaluationError(
                anchor, rule, f"{why} (upn_unverified = quarantine; verify the domain or use fallback)"
            )
        if not self.tenant.initial:
            raise EvaluationError(anchor, rule, f"{why}, and the tenant's initial domain is unknown")
        fallback = f"{local}@{self.tenant.initial}"
        out[UPN] = fallback
        return f"{why}: exported as {fallback} (upn_unverified = fallback)"

    def _in_pilot(self, tr: TypeRules, anchor: str, dn: str) -> bool:
        """Is the object a direct member of a pilot group? Like Entra Connect's group filtering,
        nested groups are not expanded. A pilot group missing from the source is an error, not an
        empty group: the object keeps its last state instead of being deprovisioned."""
        rule = f"{tr.object_type}.scope.member_of"
        pilot = self.pilot.get(tr.object_type)
        if pilot is None:
            raise EvaluationError(anchor, rule, "the pilot groups' members are not known here")
        if pilot.has(anchor, dn):
            return True
        if pilot.missing:
            raise EvaluationError(
                anchor,
                rule,
                f"pilot group {', '.join(pilot.missing)} is not in the source (outside the imported"
                " scope, or deleted): the object keeps its last state",
            )
        return False

    def initial_password(self, anchor: str, dn: str, attrs: Mapping[str, Sequence[str]]) -> str | None:
        """The rules' initial password of one user (`[user.password] initial`), None when random.

        Export time only: the result is a secret, never stored or logged. Raises EvaluationError
        naming the rule when the expression fails or gives anything but a non-empty string.
        """
        expr = self.rules.user.password.initial
        if expr is None:
            return None
        single: dict[str, Any] = {}
        for name in expr.single:
            vals = attrs.get(name) or attrs.get(name.lower())
            single[name] = vals[0] if vals else None
        multi = {n: list(attrs.get(n) or attrs.get(n.lower()) or ()) for n in expr.multi}
        self._ctx.update(
            {"source": single, "values": multi, "anchor": anchor, "dn": dn, "object_type": "user"}
        )
        return self._password_of(expr, anchor, single, multi)

    def _password_of(
        self, expr: Expression, anchor: str, single: Mapping[str, Any], multi: Mapping[str, list[str]]
    ) -> str:
        value = self._run(expr, anchor, single, multi)
        if value is None or value == "":
            raise EvaluationError(
                anchor, expr.rule, "gave no password (null or empty: a source attribute it reads is empty)"
            )
        if not isinstance(value, str):
            raise EvaluationError(anchor, expr.rule, f"must give a string, gave a {type(value).__name__}")
        return value

    def _password_step(
        self, tr: TypeRules, anchor: str, single: Mapping[str, Any], multi: Mapping[str, list[str]]
    ) -> Step:
        """The password rule in a preview: what it would do, the password itself redacted."""
        rule, force = tr.password, tr.password.force_change
        change = f"forceChangePasswordNextSignIn {str(force).lower()}"
        if rule.initial is None:
            return Step("user.password.initial", RANDOM, REDACTED, f"random, nobody knows it; {change}")
        try:
            password = self._password_of(rule.initial, anchor, single, multi)
        except EvaluationError as exc:
            return Step(
                rule.initial.rule, rule.initial.text, None, f"the create would be quarantined: {exc.reason}"
            )
        return Step(
            rule.initial.rule, rule.initial.text, REDACTED, f"{describe(password)}; {change}; on create only"
        )

    @staticmethod
    def _dn_in_scope(tr: TypeRules, dn: str) -> bool:
        if not tr.scope.include and not tr.scope.exclude:
            return True
        n = normalize_dn(dn)

        def under(base: str) -> bool:
            return n == base or n.endswith("," + base)

        if tr.scope.include and not any(under(b) for b in tr.scope.include):
            return False
        return not any(under(b) for b in tr.scope.exclude)

    def _run(
        self, expr: Expression, anchor: str, single: Mapping[str, Any], multi: Mapping[str, list[str]]
    ) -> Any:
        if expr.direct is not None:
            return single[expr.direct]  # `source.<name>`: what CEL would give, without the call
        try:
            return expr.program.execute(self._ctx)
        except Exception as exc:
            # Null in, null out: a failure over an absent attribute is not the object's fault.
            if any(single.get(n) is None for n in expr.single) or any(not multi.get(n) for n in expr.multi):
                return None
            reason = str(exc).split("\n", 1)[0] or type(exc).__name__
            raise EvaluationError(anchor, expr.rule, reason, expr.text) from exc

    @staticmethod
    def _check_required(tr: TypeRules, anchor: str, out: Mapping[str, Any]) -> None:
        for attribute in REQUIRED[tr.object_type]:
            if attribute in out and out[attribute] in (None, ""):
                raise EvaluationError(
                    anchor, f"{tr.object_type}.flows.{attribute}", "is empty, but Graph requires it"
                )


def _json_value(value: Any) -> Any:
    """CEL results as JSON values: tuples to lists, empty strings to null (Graph clears with null)."""
    if value == "":
        return None
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
