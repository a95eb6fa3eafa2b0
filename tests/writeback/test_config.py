"""`[writeback]` configuration: every missing piece is named by its setting."""

from __future__ import annotations

from pathlib import Path

from idsync.config import load_config
from idsync.writeback.run import source_settings
from tests.test_config import MINIMAL, problems, write


def test_enabled_writeback_names_what_it_lacks(tmp_path: Path) -> None:
    text = MINIMAL + '\n[writeback]\nenabled = true\ngroup_scope = "named"\n'
    assert problems(write(tmp_path, text)) == [
        "writeback.bind_dn: required when writeback is enabled (the writer's own account)",
        "writeback.password_file: required when writeback is enabled (or password_credential)",
        "writeback.groups_ou: required when group writeback is on (writeback.groups)",
        'writeback.group_names: required with group_scope = "named"',
    ]


def test_writeback_needs_active_directory(tmp_path: Path) -> None:
    text = MINIMAL.replace('kind = "ad"', 'kind = "openldap"') + (
        '\n[writeback]\nenabled = true\nbind_dn = "CN=wb,DC=example,DC=com"\npassword_file = "pw"\n'
        'groups_ou = "OU=Cloud,DC=example,DC=com"\n'
    )
    assert problems(write(tmp_path, text)) == [
        'writeback.enabled: writeback needs source.kind = "ad" (Active Directory)'
    ]


def test_bad_ou_is_named(tmp_path: Path) -> None:
    text = MINIMAL + '\n[writeback]\ngroups_ou = "Cloud Groups"\n'
    assert problems(write(tmp_path, text)) == [
        "writeback.groups_ou: must be a distinguished name like OU=Cloud Groups,DC=example,DC=com"
        " (got 'Cloud Groups')"
    ]


def test_scope_and_import_exclusion(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    text = MINIMAL + (
        '\n[writeback]\nenabled = true\nbind_dn = "CN=wb,DC=example,DC=com"\npassword_file = "pw"\n'
        'groups_ou = "OU=Cloud,DC=example,DC=com"\ngroup_scope = "filter"\ngroup_name_prefix = "WB-"\n'
    )
    cfg = load_config(write(tmp_path, text), {})
    assert cfg.writeback.in_scope("wb-Sales") and not cfg.writeback.in_scope("Sales")
    s = source_settings(cfg)
    # The written-back groups never come back up: their OU and their mark are out of the import.
    assert s.exclude_ous == ("OU=Cloud,DC=example,DC=com",)
    assert s.group_filter == "(&(objectClass=group)(!(adminDescription=Group_*)))"
    # Disabled (the default): the import is untouched.
    plain = load_config(write(tmp_path, MINIMAL), {})
    assert (
        source_settings(plain).exclude_ous == ()
        and source_settings(plain).group_filter == "(objectClass=group)"
    )
