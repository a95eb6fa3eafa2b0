"""Entra ID's password rules for cloud users: what a password set through Graph must meet."""

from __future__ import annotations

# Microsoft Entra password policy, which applies to cloud users created through Graph
# (passwordProfile.password "must satisfy minimum requirements as specified by the user's
# passwordPolicies property. By default, a strong password is required", docs-contrib
# api-reference/v1.0/resources/passwordprofile.md; user.md's passwordPolicies points to the policy
# itself, entra-docs docs/identity/authentication/concept-sspr-policy.md, "Microsoft Entra password
# policies"):
# 8 to 256 characters; A-Z, a-z, 0-9, the symbols below and blank space; no other (Unicode)
# characters; three of the four kinds lowercase, uppercase, digits, symbols.
MIN_LENGTH, MAX_LENGTH = 8, 256
SYMBOLS = frozenset("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")
REDACTED = "<redacted>"


def password_problem(password: str) -> str | None:
    """Why `password` breaks Entra ID's password rules (never quoting it), or None when it is fine."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return f"it has {len(password)} characters ({MIN_LENGTH} to {MAX_LENGTH} needed)"
    bad = sorted({c for c in password if not (c.isascii() and (c.isalnum() or c in SYMBOLS))})
    if bad:
        kinds = "non-ASCII" if any(not c.isascii() for c in bad) else "control or unlisted"
        return (
            f"it has {len(bad)} {kinds} character(s) Entra ID does not allow"
            " (A-Z, a-z, 0-9, blank and @ # $ % ^ & * - _ ! + = [ ] { } | \\ : ' , . ? / ` ~ \" ( ) ; < >)"
        )
    classes = {
        "lowercase": any(c.islower() for c in password),
        "uppercase": any(c.isupper() for c in password),
        "digits": any(c.isdigit() for c in password),
        "symbols": any(c in SYMBOLS for c in password),
    }
    if sum(classes.values()) < 3:
        has = ", ".join(k for k, v in classes.items() if v) or "none"
        return f"it mixes only {sum(classes.values())} of the 4 kinds of characters ({has}); Entra ID needs 3"
    return None


def describe(password: str) -> str:
    """What a preview may say about a computed password: its length and whether Entra ID takes it."""
    problem = password_problem(password)
    return f"{len(password)} characters, " + (f"refused: {problem}" if problem else "meets Entra ID's rules")
