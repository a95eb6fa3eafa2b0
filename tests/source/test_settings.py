"""The connector's settings come from `[source]` of the configuration file."""

from __future__ import annotations

from pathlib import Path

from idsync.config.source import SourceSettings
from idsync.source import LdapSourceSettings
from idsync.source.scope import Scope


def test_settings_from_the_source_section_read_the_password_file_when_connecting(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("first\n")
    cfg = SourceSettings.model_validate(
        {
            "kind": "ad",
            "ldap": {
                "urls": ["ldap://dc1.example.org", "ldap://dc2.example.org"],
                "start_tls": True,
                "bind_dn": "CN=sync,DC=example,DC=org",
                "password_file": str(pw),
                "base_dns": ["DC=example,DC=org"],
                "exclude_ous": ["OU=Disabled,DC=example,DC=org"],
                "extra_attributes": ["extensionAttribute1"],
                "page_size": 500,
            },
        }
    )
    s = LdapSourceSettings.from_config(cfg)
    assert s.urls == ("ldap://dc1.example.org", "ldap://dc2.example.org") and s.start_tls
    assert (s.delta_mode, s.page_size, s.users) == (
        "dirsync",
        500,
        "(&(objectCategory=person)(objectClass=user))",
    )
    assert "extensionAttribute1" in s.attributes and "objectGUID" in s.attributes
    assert s.read_password() == "first"
    pw.write_text("rotated\n")
    assert s.read_password() == "rotated"  # read at each connect, never cached
    scope = Scope.from_settings(s)
    assert scope.in_scope("CN=a,OU=Staff,DC=example,DC=org")
    assert not scope.in_scope("CN=a,OU=disabled,DC=Example,DC=org")
    assert not scope.in_scope("CN=a,DC=other,DC=org")
    narrower = Scope.from_settings(
        LdapSourceSettings.from_config(
            cfg.model_copy(update={"ldap": cfg.ldap.model_copy(update={"exclude_ous": []})})
        )
    )
    assert narrower.fingerprint() != scope.fingerprint()  # a scope change invalidates delta positions
