"""Sync rules: scoping, join and attribute flows per object type, loaded from TOML and validated.

Every CEL expression is compiled once, at load. Loading collects *every* problem (a CEL compile
error names the rule, the attribute and the expression; an unknown target attribute is an error)
and raises one RulesError listing them. The rules hash is the SHA-256 of the effective rules
(preset merged with the file), so a change of meaning triggers a full sync and a reordering of the
file does not.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cel
import orjson

from idsync.model import OBJECT_TYPES, ObjectType
from idsync.sync import defaults
from idsync.sync.errors import RuleProblem, RulesError
from idsync.sync.functions import unknown_functions
from idsync.sync.ldapfilter import FilterSyntaxError, LdapFilter
from idsync.sync.ldapfilter import parse as parse_filter
from idsync.sync.targets import REQUIRED, is_known

# Bump when the engine's interpretation of the same rules changes: it forces a full sync.
ENGINE_VERSION = 1

Deprovision = Literal["delete", "disable", "leave"]
DEPROVISION: tuple[str, ...] = ("delete", "disable", "leave")
SOFT_MATCH: tuple[str, ...] = ("off", "userPrincipalName", "mail")
VARIABLES = frozenset({"source", "values", "anchor", "dn", "object_type"})
_TOP_KEYS = {"preset", "directory_extension_app", "user", "group"}
_TYPE_KEYS = {
    "enabled",
    "anchor_attribute",
    "deprovision",
    "join",
    "scope",
    "flows",
    "members",
    "upn_unverified",
    "manager",
    "password",
}
# What to do with a userPrincipalName whose suffix is not a verified domain of the tenant:
# Entra Connect's fallback to `<local>@<initial domain>`, or quarantine the user.
UPN_UNVERIFIED: tuple[str, ...] = ("fallback", "quarantine")
_SCOPE_KEYS = {"include", "exclude", "filter", "condition", "member_of"}
_PASSWORD_KEYS = {"initial", "force_change"}
RANDOM = "random"  # `[user.password] initial`: a random password nobody knows (the default)
_JOIN_KEYS = {"soft_match"}
# source.x, source["x"], values.x, values["x"]: the source attributes an expression reads.
_REF = re.compile(r"\b(source|values)\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*[\"']([^\"']+)[\"']\s*\])")
_COMPREHENSION = re.compile(r"\.\s*(?:map|filter|all|exists|exists_one)\s*\(\s*([A-Za-z_]\w*)\s*,")
_DIRECT = re.compile(r"\s*source\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\s*")


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with the rule it belongs to and the source attributes it reads."""

    rule: str
    text: str
    program: cel.Program
    single: tuple[str, ...]  # names read as source.<name> (first value)
    multi: tuple[str, ...]  # names read as values.<name> (all values)
    # The name, when the whole expression is `source.<name>`: its value is the attribute's first
    # value (or null), which the evaluator reads without a CEL call (most flows are such copies).
    direct: str | None = None


@dataclass(frozen=True)
class Flow:
    """One target attribute and the expression that computes it."""

    attribute: str
    expression: Expression


@dataclass(frozen=True)
class Scope:
    """Which source objects a type's rules apply to (all parts must agree)."""

    include: tuple[str, ...] = ()  # normalized DN suffixes; empty = everywhere
    exclude: tuple[str, ...] = ()
    filter: LdapFilter | None = None
    condition: Expression | None = None
    # Pilot scoping (Entra Connect's "sync selected"): normalized DNs of groups the object must be
    # a *direct* member of (any of them); empty = no such condition.
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class PasswordRule:
    """`[user.password]`: the initial password of a created user (Graph requires one on create and
    never returns it, so it is set once and never compared or updated).

    `initial` None is a random password nobody knows; else a CEL expression computed at export
    time from the source object (never stored). `force_change` is passwordProfile's
    forceChangePasswordNextSignIn. `configured` says whether the rules chose a policy at all.
    """

    initial: Expression | None = None
    force_change: bool = False
    configured: bool = False


@dataclass(frozen=True)
class TypeRules:
    """The rules of one object type."""

    object_type: ObjectType
    enabled: bool
    anchor_attribute: str
    deprovision: Deprovision
    soft_match: str | None  # target attribute used for soft match when enabled; None = never
    members: bool
    scope: Scope
    flows: tuple[Flow, ...]
    upn_unverified: str = "fallback"
    # Users: the reference flow giving the manager's DN (PUT /users/{id}/manager/$ref); None = off.
    manager: Expression | None = None
    password: PasswordRule = PasswordRule()

    @property
    def attributes(self) -> tuple[str, ...]:
        """The managed target attributes (those with a flow)."""
        return tuple(f.attribute for f in self.flows)


@dataclass(frozen=True)
class Rules:
    """The effective rules: one TypeRules per object type, plus the hash that identifies them."""

    origin: str
    user: TypeRules
    group: TypeRules
    hash: str
    effective: Mapping[str, Any]

    def of(self, object_type: str) -> TypeRules:
        return self.user if object_type == "user" else self.group

    def anchor_attribute(self, object_type: str) -> str:
        """The target attribute that carries the source anchor (the target import reads it)."""
        return self.of(object_type).anchor_attribute

    def managed_attributes(self, object_type: str) -> tuple[str, ...]:
        """The target attributes idsync writes (the target import must $select them)."""
        return self.of(object_type).attributes


def normalize_dn(dn: str) -> str:
    """Lower-case, no blanks around ',' and '=' — enough to compare DNs and suffixes."""
    return re.sub(r"\s*([,=])\s*", r"\1", dn.strip()).lower()


def references(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The source attribute names an expression reads, as (single-valued, multi-valued)."""
    single: dict[str, None] = {}
    multi: dict[str, None] = {}
    for m in _REF.finditer(text):
        name = m.group(2) or m.group(3)
        (single if m.group(1) == "source" else multi)[name] = None
    return tuple(single), tuple(multi)


def compile_expression(rule: str, text: str, problems: list[RuleProblem]) -> Expression | None:
    """Compile one expression; on failure add a problem naming rule and expression, return None."""
    if not isinstance(text, str) or not text.strip():
        problems.append(RuleProblem(rule, "an expression must be a non-empty string", repr(text)))
        return None
    try:
        program = cel.compile(text)
    except (ValueError, RuntimeError) as exc:
        message = str(exc)
        where = re.search(r"<input>:(\d+):(\d+): ([^\n|]*)", message)
        if where:
            line, col, what = where.groups()
            at = f"column {col}" if line == "1" else f"line {line}, column {col}"
            reason = f"CEL compile error at {at}: {what.strip()}"
        else:
            reason = f"CEL compile error: {message.splitlines()[0]}"
        problems.append(RuleProblem(rule, reason, text))
        return None
    bad_functions = unknown_functions(program.functions())
    if bad_functions:
        problems.append(RuleProblem(rule, f"unknown function(s) {', '.join(bad_functions)}", text))
    bound = set(_COMPREHENSION.findall(text))
    bad_vars = sorted(set(program.variables()) - VARIABLES - bound)
    if bad_vars:
        allowed = ", ".join(sorted(VARIABLES))
        problems.append(RuleProblem(rule, f"unknown variable(s) {', '.join(bad_vars)} (use {allowed})", text))
    single, multi = references(text)
    direct = m.group(1) if (m := _DIRECT.fullmatch(text)) else None
    return Expression(rule, text, program, single, multi, direct)


def _merge(preset: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Preset overlaid with the file: tables merge key by key, a flow set to false is removed."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in preset.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _unknown_keys(rule: str, data: Mapping[str, Any], known: set[str], problems: list[RuleProblem]) -> None:
    for key in data:
        if key not in known:
            problems.append(
                RuleProblem(
                    f"{rule}.{key}" if rule else key, f"unknown setting (known: {', '.join(sorted(known))})"
                )
            )


def _type_rules(
    object_type: ObjectType, data: Mapping[str, Any], group_anchor: str, problems: list[RuleProblem]
) -> TypeRules:
    t = object_type
    _unknown_keys(t, data, _TYPE_KEYS, problems)
    enabled = bool(data.get("enabled", True))
    default_anchor = "onPremisesImmutableId" if t == "user" else group_anchor
    anchor_attribute = str(data.get("anchor_attribute") or default_anchor)

    deprovision = data.get("deprovision", "delete")
    if deprovision not in DEPROVISION:
        problems.append(
            RuleProblem(f"{t}.deprovision", f"must be one of {', '.join(DEPROVISION)}, not {deprovision!r}")
        )
        deprovision = "leave"
    if deprovision == "disable" and t == "group":
        problems.append(RuleProblem("group.deprovision", "groups cannot be disabled: use delete or leave"))

    join = data.get("join", {}) or {}
    _unknown_keys(f"{t}.join", join, _JOIN_KEYS, problems)
    soft = join.get("soft_match", "off")
    if soft not in SOFT_MATCH:
        problems.append(
            RuleProblem(f"{t}.join.soft_match", f"must be one of {', '.join(SOFT_MATCH)}, not {soft!r}")
        )
        soft = "off"
    upn_unverified = data.get("upn_unverified", "fallback")
    if upn_unverified not in UPN_UNVERIFIED:
        problems.append(
            RuleProblem(
                f"{t}.upn_unverified", f"must be one of {', '.join(UPN_UNVERIFIED)}, not {upn_unverified!r}"
            )
        )
        upn_unverified = "fallback"
    if t == "group" and "upn_unverified" in data:
        problems.append(RuleProblem("group.upn_unverified", "groups have no userPrincipalName"))
    if soft == "userPrincipalName" and t == "group":
        problems.append(
            RuleProblem("group.join.soft_match", "groups have no userPrincipalName: use mail or off")
        )

    scope_data = data.get("scope", {}) or {}
    _unknown_keys(f"{t}.scope", scope_data, _SCOPE_KEYS, problems)
    ldap_filter: LdapFilter | None = None
    if scope_data.get("filter"):
        try:
            ldap_filter = parse_filter(str(scope_data["filter"]))
        except FilterSyntaxError as exc:
            problems.append(
                RuleProblem(f"{t}.scope.filter", f"LDAP filter error: {exc}", str(scope_data["filter"]))
            )
    condition = None
    if scope_data.get("condition"):
        condition = compile_expression(f"{t}.scope.condition", scope_data["condition"], problems)
    dn_lists: dict[str, tuple[str, ...]] = {}
    for key in ("include", "exclude"):
        value = scope_data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
            problems.append(
                RuleProblem(f"{t}.scope.{key}", 'must be a list of DNs, e.g. ["OU=Staff,DC=example,DC=com"]')
            )
            value = []
        dn_lists[key] = tuple(normalize_dn(v) for v in value)
    member_of = _member_of(t, scope_data.get("member_of"), problems)
    scope = Scope(dn_lists["include"], dn_lists["exclude"], ldap_filter, condition, member_of)
    password = _password_rule(t, data.get("password"), problems)

    flows: list[Flow] = []
    flow_data = dict(data.get("flows", {}) or {})
    if t == "group" and anchor_attribute not in flow_data:
        flow_data[anchor_attribute] = "anchor"  # the extension attribute carries the anchor as is
    for attribute, text in flow_data.items():
        if text is False:
            continue  # a preset flow switched off
        rule = f"{t}.flows.{attribute}"
        if not is_known(t, attribute):
            problems.append(RuleProblem(rule, f"unknown target attribute {attribute!r} for a {t}"))
        expr = compile_expression(rule, text, problems)
        if expr is not None:
            flows.append(Flow(attribute, expr))
    manager = _manager_rule(t, data.get("manager", False), problems)
    names = {a for a, text in flow_data.items() if text is not False}
    if enabled:
        for attribute in REQUIRED[t]:
            if attribute not in names:
                problems.append(
                    RuleProblem(
                        f"{t}.flows", f"no flow for {attribute}, which Graph requires to create a {t}"
                    )
                )
        if anchor_attribute not in names:
            problems.append(
                RuleProblem(
                    f"{t}.anchor_attribute",
                    f"{anchor_attribute} has no flow, so idsync could not recognise its own objects",
                )
            )
        if soft != "off" and soft not in names:
            problems.append(RuleProblem(f"{t}.join.soft_match", f"{soft} has no flow to match on"))
    return TypeRules(
        object_type=t,
        enabled=enabled,
        anchor_attribute=anchor_attribute,
        deprovision=deprovision,
        soft_match=None if soft == "off" else soft,
        members=bool(data.get("members", t == "group")),
        scope=scope,
        flows=tuple(flows),
        upn_unverified=str(upn_unverified),
        manager=manager,
        password=password,
    )


def _manager_rule(t: ObjectType, text: Any, problems: list[RuleProblem]) -> Expression | None:
    """`[user] manager`: an expression giving the manager's DN (null = no manager); false = off."""
    if text is False or text is None:
        return None
    if t != "user":
        problems.append(RuleProblem(f"{t}.manager", "only users have a manager"))
        return None
    return compile_expression("user.manager", text, problems)


def _member_of(t: str, value: Any, problems: list[RuleProblem]) -> tuple[str, ...]:
    """`[<type>.scope] member_of`: one group DN or a list of them (direct membership in any)."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and "=" in v for v in values):
        problems.append(
            RuleProblem(
                f"{t}.scope.member_of",
                'must be a group DN or a list of them, e.g. "CN=Pilot,OU=Groups,DC=example,DC=com"',
                repr(value),
            )
        )
        return ()
    return tuple(dict.fromkeys(normalize_dn(v) for v in values))


def _password_rule(t: str, data: Any, problems: list[RuleProblem]) -> PasswordRule:
    """`[user.password]`: `initial = "random" | "<CEL expression>"`, `force_change = true|false`."""
    if data is None:
        return PasswordRule()
    if t != "user":
        problems.append(RuleProblem(f"{t}.password", f"a {t} has no password: only users sign in"))
        return PasswordRule()
    if not isinstance(data, Mapping):
        problems.append(RuleProblem("user.password", "must be a table ([user.password])"))
        return PasswordRule()
    _unknown_keys("user.password", data, _PASSWORD_KEYS, problems)
    force = data.get("force_change", False)
    if not isinstance(force, bool):
        problems.append(RuleProblem("user.password.force_change", f"must be true or false, not {force!r}"))
        force = False
    text = data.get("initial", RANDOM)
    initial = None
    if text != RANDOM:
        initial = compile_expression("user.password.initial", text, problems)
    return PasswordRule(initial, force, configured=True)


def rules_from_mapping(
    data: Mapping[str, Any], *, origin: str, source_kind: str = "ad", group_anchor: str | None = None
) -> Rules:
    """Build and validate rules from a parsed TOML document (its preset defaults to the source kind).

    The group anchor attribute is, in order: `[group] anchor_attribute`, the extension of
    `directory_extension_app`, `group_anchor` (what the target configuration names), and
    `extension_idsync_idsyncSourceAnchor`.
    """
    problems: list[RuleProblem] = []
    _unknown_keys("", data, _TOP_KEYS, problems)
    preset_name = str(data.get("preset", source_kind))
    if preset_name not in defaults.PRESETS:
        problems.append(
            RuleProblem("preset", f"must be one of {', '.join(defaults.PRESETS)}, not {preset_name!r}")
        )
        preset_name = "none"
    extension_app = str(data.get("directory_extension_app") or defaults.DEFAULT_EXTENSION_APP)
    if not re.fullmatch(r"[0-9A-Za-z-]+", extension_app):
        problems.append(
            RuleProblem("directory_extension_app", "must be an application id (letters, digits, dashes)")
        )
    preset = defaults.PRESETS[preset_name]
    if data.get("directory_extension_app") or not group_anchor:
        group_anchor = defaults.group_anchor_attribute(extension_app)
    effective: dict[str, Any] = {"engine": ENGINE_VERSION, "group_anchor": group_anchor}
    built: dict[str, TypeRules] = {}
    for t in OBJECT_TYPES:
        section = data.get(t, {})
        if not isinstance(section, Mapping):
            problems.append(RuleProblem(t, "must be a table"))
            section = {}
        merged = _merge(preset.get(t, {}), section)
        effective[t] = merged
        built[t] = _type_rules(t, merged, group_anchor, problems)
    if problems:
        raise RulesError(origin, problems)
    digest = hashlib.sha256(orjson.dumps(effective, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Rules(origin=origin, user=built["user"], group=built["group"], hash=digest, effective=effective)


def rules_from_effective(effective: Mapping[str, Any], *, origin: str, rules_hash: str) -> Rules:
    """Rules built again from their `effective` form (how a worker process gets them: compiled
    CEL programs do not pickle). Raises RulesError unless the result has `rules_hash`."""
    data: dict[str, Any] = {"preset": "none", **{t: effective[t] for t in OBJECT_TYPES}}
    again = rules_from_mapping(data, origin=origin, group_anchor=effective["group_anchor"])
    if again.hash != rules_hash:
        raise RulesError(origin, [RuleProblem("rules", "could not be rebuilt from their effective form")])
    return again


def load_rules(path: Path | None, *, source_kind: str = "ad", group_anchor: str | None = None) -> Rules:
    """Load the rules file (`[sync] rules_file`), or the preset for the source kind when None.

    `group_anchor` is the group anchor extension the target configuration names (see
    rules_from_mapping for the order of precedence).
    """
    if path is None:
        return rules_from_mapping(
            {}, origin=f"preset {source_kind}", source_kind=source_kind, group_anchor=group_anchor
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(str(path), [RuleProblem("file", f"cannot be read: {exc.strerror or exc}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(str(path), [RuleProblem("file", f"TOML syntax error: {exc}")]) from exc
    return rules_from_mapping(data, origin=str(path), source_kind=source_kind, group_anchor=group_anchor)
