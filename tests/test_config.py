"""Loading idsync.toml: defaults, every class of error, env overrides and secrets."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pydantic
import pytest

from idsync.config import Config, ConfigError, ConfigProblem, load_config

MINIMAL = """\
[node]
name = "a"
cluster = "test"

[store]
dsn_file = "dsn"

[source]
kind = "ad"

[source.ldap]
urls = ["ldaps://dc1.example.com"]
base_dns = ["DC=example,DC=com"]

[target.graph]
graph_endpoint = "https://127.0.0.1:8443"
anonymous = true

[ha.zookeeper]
hosts = "127.0.0.1:2181"
"""


def write(tmp_path: Path, text: str = MINIMAL, name: str = "idsync.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "dsn").write_text("postgresql://idsync:s3cret@127.0.0.1/idsync\n")
    return path


def edit(text: str, section: str, line: str) -> str:
    """Add `line` right under the `[section]` header of `text`."""
    header = f"[{section}]\n"
    assert header in text, section
    return text.replace(header, header + line + "\n", 1)


def problems(path: Path, env: dict[str, str] | None = None, **kw: bool) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {}, **kw)
    return [str(p) for p in info.value.problems]


def test_minimal_file_gets_sane_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path), {})
    assert cfg.store.schema_name == "idsync_a"
    assert cfg.source.ldap.user_filter == "(&(objectCategory=person)(objectClass=user))"
    assert cfg.source.ldap.group_filter == "(objectClass=group)"
    assert cfg.source.ldap.delta_mode == "dirsync"
    assert cfg.source.ldap.page_size == 1000
    assert cfg.target.graph.write_budget == 3000
    assert cfg.target.graph.write_window_seconds == 150
    assert cfg.target.graph.authority_host == "https://login.microsoftonline.com"
    assert cfg.sync.deletion_threshold_count == 500
    assert cfg.sync.soft_match is False
    assert cfg.ha.zookeeper.session_timeout_seconds == 30
    assert (cfg.ha.loop_interval_seconds, cfg.ha.retry_timeout_seconds) == (10, 10)
    assert cfg.admin.listen == "127.0.0.1:9470" and cfg.admin.loopback
    assert cfg.admin.token() is None
    assert (cfg.log.level, cfg.log.format) == ("info", "auto")


def test_openldap_gets_its_own_filters_and_delta_mode(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.replace('kind = "ad"', 'kind = "openldap"')), {})
    assert cfg.source.ldap.user_filter == "(objectClass=inetOrgPerson)"
    assert cfg.source.ldap.group_filter == "(objectClass=groupOfNames)"
    assert cfg.source.ldap.delta_mode == "syncrepl"


def test_node_name_defaults_to_hostname_and_schema_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "Web-01.corp.example.com")
    cfg = load_config(write(tmp_path, MINIMAL.replace('name = "a"\n', "")), {})
    assert cfg.node.name == "Web-01"
    assert cfg.store.schema_name == "idsync_web_01"


def test_config_is_immutable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path), {})
    with pytest.raises(pydantic.ValidationError):
        cfg.node.name = "b"  # type: ignore[misc]


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: no such file"]


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nname = "a"\ncluster = \n')
    assert problems(path) == [f"{path}: TOML syntax error at line 3, column 11: invalid value"]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "source.ldap", 'bind_nd = "cn=x"'))
    assert problems(path) == ["source.ldap.bind_nd: unknown setting (did you mean 'bind_dn'?)"]


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[metrics]\nport = 1\n")
    assert problems(path) == ["metrics: unknown setting"]


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "source.ldap", 'page_size = "lots"'))
    assert problems(path) == [
        "source.ldap.page_size: input should be a valid integer, unable to parse string as an integer"
        " (got 'lots')"
    ]


def test_bad_url_names_the_list_item(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('"ldaps://dc1.example.com"', '"ldaps://dc1", "dc2.example.com"'))
    assert problems(path) == [
        "source.ldap.urls[1]: must start with ldap:// or ldaps:// (got 'dc2.example.com')"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = edit(MINIMAL, "source.ldap", "page_size = 0")
    text = edit(text, "node", 'colour = "red"')
    text = text.replace('kind = "ad"', 'kind = "novell"')
    assert problems(write(tmp_path, text)) == [
        "node.colour: unknown setting",
        "source.kind: input should be 'ad' or 'openldap' (got 'novell')",
        "source.ldap.page_size: input should be greater than or equal to 1 (got 0)",
    ]


def test_missing_required_setting(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('hosts = "127.0.0.1:2181"\n', ""))
    assert problems(path) == ["ha.zookeeper.hosts: required but not set"]


def test_section_of_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, 'admin = "yes"\n' + MINIMAL)
    assert problems(path) == ["admin: must be a table (a [section] or { ... })"]


def test_timing_rule_names_the_fields(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[ha]\nloop_interval_seconds = 15\n")
    assert problems(path) == [
        "ha.zookeeper.session_timeout_seconds: must be at least ha.loop_interval_seconds + "
        "2 * ha.retry_timeout_seconds (15 + 2 * 10 = 35), is 30"
    ]


def test_a_request_must_fit_in_the_lease(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "target.graph", "request_timeout_seconds = 20"))
    assert problems(path) == [
        "target.graph.request_timeout_seconds: must be less than 2/3 of "
        "ha.zookeeper.session_timeout_seconds (20): the leader starts a write only while its lease "
        "outlasts the request, so that the write has ended before another node can be elected"
    ]


@pytest.mark.parametrize(
    ("kind", "mode", "allowed"),
    [("openldap", "dirsync", "'syncrepl', 'none'"), ("ad", "syncrepl", "'dirsync', 'usn', 'none'")],
)
def test_delta_mode_must_suit_the_kind(tmp_path: Path, kind: str, mode: str, allowed: str) -> None:
    text = edit(MINIMAL.replace('kind = "ad"', f'kind = "{kind}"'), "source.ldap", f'delta_mode = "{mode}"')
    assert problems(write(tmp_path, text)) == [
        f"source.ldap.delta_mode: '{mode}' is not available for kind '{kind}' (use {allowed})"
    ]


def test_ad_page_size_is_capped(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "source.ldap", "page_size = 5000"))
    assert problems(path) == [
        "source.ldap.page_size: must be at most 1000 for Active Directory (its MaxPageSize)"
    ]
    cfg = load_config(write(tmp_path, path.read_text().replace('kind = "ad"', 'kind = "openldap"')), {})
    assert cfg.source.ldap.page_size == 5000


def test_bad_ldap_filter(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "source.ldap", 'user_filter = "(objectClass=user"'))
    assert problems(path) == [
        "source.ldap.user_filter: must be an LDAP filter in balanced parentheses, e.g. (objectClass=user)"
        " (got '(objectClass=user')"
    ]


def test_schema_must_be_a_postgres_identifier(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "store", 'schema = "Idsync-A"'))
    [problem] = problems(path)
    assert problem.startswith("store.schema: must be a PostgreSQL identifier")


def test_anonymous_only_against_an_emulator(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("https://127.0.0.1:8443", "https://graph.microsoft.com"))
    assert problems(path) == [
        "target.graph.anonymous: is only allowed with an emulator endpoint, not https://graph.microsoft.com"
    ]


def test_real_tenant_needs_ids_and_one_credential(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("anonymous = true", ""))
    assert problems(path) == [
        "target.graph.tenant_id: required unless anonymous = true",
        "target.graph.client_id: required unless anonymous = true",
        "target.graph.client_secret_file: no app credential: set client_secret_file, "
        "client_secret_credential, certificate_file or certificate_credential",
    ]


def test_certificate_credential_resolves_in_credentials_directory(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "anonymous = true",
        'tenant_id = "contoso.onmicrosoft.com"\nclient_id = "00000000-0000-0000-0000-0000000000AB"\n'
        'certificate_credential = "app.pem"',
    )
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "app.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load_config(write(tmp_path, text), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.target.graph.auth_method == "certificate"
    assert cfg.target.graph.client_id == "00000000-0000-0000-0000-0000000000ab"
    assert cfg.target.graph.certificate_path() == str(creds / "app.pem")


def test_admin_off_loopback_needs_a_token(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[admin]\nlisten = "0.0.0.0:9470"\n')
    assert problems(path) == [
        "admin.token_file: required because admin.listen (0.0.0.0:9470) is not a loopback address"
    ]
    (tmp_path / "token").write_text("t0ken\n")
    cfg = load_config(write(tmp_path, path.read_text() + 'token_file = "token"\n'), {})
    assert cfg.admin.token() == "t0ken"
    assert cfg.admin.host_port() == ("0.0.0.0", 9470)
    # other nodes cannot reach 0.0.0.0: the advertised URL names this host
    assert cfg.admin.public_url() == f"http://{socket.getfqdn()}:9470"
    cfg = load_config(
        write(
            tmp_path,
            path.read_text() + 'advertise_url = "https://a.example.com:9470/"\n',
        ),
        {},
    )
    assert cfg.admin.public_url() == "https://a.example.com:9470"


@pytest.mark.parametrize("url", ["a.example.com:9470", "http://0.0.0.0:9470", "ftp://a.example.com"])
def test_bad_admin_advertise_url(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, MINIMAL + f'[admin]\nadvertise_url = "{url}"\n')
    [problem] = problems(path)
    assert problem.startswith("admin.advertise_url: must ")


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("9470", "must be host:port, e.g. 127.0.0.1:9470 or [::1]:9470"),
        ("::1:9470", "an IPv6 address must be in brackets, e.g. [::1]:9470"),
        ("127.0.0.1:http", "port must be a number from 1 to 65535 (got 'http')"),
    ],
)
def test_bad_admin_listen(tmp_path: Path, listen: str, message: str) -> None:
    path = write(tmp_path, MINIMAL + f'[admin]\nlisten = "{listen}"\n')
    assert problems(path) == [f"admin.listen: {message} (got '{listen}')"]


def test_ipv6_loopback_needs_no_token(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL + '[admin]\nlisten = "[::1]:9470"\n'), {})
    assert cfg.admin.loopback and cfg.admin.host_port() == ("::1", 9470)
    assert cfg.admin.public_url() == "http://[::1]:9470"


# --- environment overrides ---------------------------------------------------------


def test_env_overrides_any_setting(tmp_path: Path) -> None:
    env = {
        "IDSYNC_SOURCE__LDAP__URLS": '["ldap://x.example.com", "ldaps://y.example.com"]',
        "IDSYNC_HA__ZOOKEEPER__SESSION_TIMEOUT_SECONDS": "60",
        "IDSYNC_SYNC__SOFT_MATCH": "true",
        "IDSYNC_STORE__SCHEMA": "custom",
        "idsync_node__cluster": "lower",  # names are case-insensitive
        "IDSYNC_CONFIG": "/ignored/because/a/path/is/given",
    }
    cfg = load_config(write(tmp_path), env)
    assert cfg.source.ldap.urls == ["ldap://x.example.com", "ldaps://y.example.com"]
    assert cfg.ha.zookeeper.session_timeout_seconds == 60.0
    assert cfg.sync.soft_match is True
    assert cfg.store.schema_name == "custom"
    assert cfg.node.cluster == "lower"


def test_env_list_may_be_comma_separated(tmp_path: Path) -> None:
    env = {"IDSYNC_SOURCE__LDAP__URLS": "ldaps://a.example.com, ldaps://b.example.com"}
    cfg = load_config(write(tmp_path), env)
    assert cfg.source.ldap.urls == ["ldaps://a.example.com", "ldaps://b.example.com"]


def test_env_can_supply_a_missing_section(tmp_path: Path) -> None:
    text = MINIMAL.replace('[ha.zookeeper]\nhosts = "127.0.0.1:2181"\n', "")
    cfg = load_config(write(tmp_path, text), {"IDSYNC_HA__ZOOKEEPER__HOSTS": "zk1:2181,zk2:2181/idsync"})
    assert cfg.ha.zookeeper.hosts == "zk1:2181,zk2:2181/idsync"


def test_env_problems_name_the_variable(tmp_path: Path) -> None:
    env = {
        "IDSYNC_SOURCE__LDAP__URL": "ldaps://x",
        "IDSYNC_TARGET__GRAPH": "x",
        "IDSYNC_HA__RETRY_TIMEOUT_SECONDS": "soon",
        "IDSYNC_UNRELATED": "not an override: no double underscore",
    }
    assert problems(write(tmp_path), env) == [
        "IDSYNC_SOURCE__LDAP__URL: names no setting (source.ldap.url does not exist)",
        "IDSYNC_TARGET__GRAPH: names the section [target.graph], not a setting",
        "ha.retry_timeout_seconds: input should be a valid number, unable to parse string as a number"
        " (got 'soon') (from IDSYNC_HA__RETRY_TIMEOUT_SECONDS)",
    ]


def test_env_bad_list_item_names_the_variable(tmp_path: Path) -> None:
    env = {"IDSYNC_SOURCE__LDAP__URLS": "ldaps://a,https://b"}
    assert problems(write(tmp_path), env) == [
        "source.ldap.urls[1]: must start with ldap:// or ldaps:// (got 'https://b')"
        " (from IDSYNC_SOURCE__LDAP__URLS)"
    ]


def test_idsync_config_names_the_default_file(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert load_config(None, {"IDSYNC_CONFIG": str(path)}).node.name == "a"


# --- secrets -------------------------------------------------------------------------


def test_secret_files_are_read_at_use_and_stripped(tmp_path: Path) -> None:
    text = edit(MINIMAL, "source.ldap", 'bind_dn = "cn=idsync"\npassword_file = "secrets/ldap"')
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ldap").write_text("  pw-1\n")
    cfg = load_config(write(tmp_path, text), {})
    assert cfg.source.ldap.password_file == tmp_path / "secrets" / "ldap"
    assert cfg.source.ldap.password() == "pw-1"
    (tmp_path / "secrets" / "ldap").write_text("pw-2\n")  # rotated: next use sees it
    assert cfg.source.ldap.password() == "pw-2"
    assert cfg.store.dsn() == "postgresql://idsync:s3cret@127.0.0.1/idsync"


def test_missing_secret_file_names_the_setting(tmp_path: Path) -> None:
    text = edit(MINIMAL, "source.ldap", 'bind_dn = "cn=idsync"\npassword_file = "/nonexistent/pw"')
    cfg = load_config(write(tmp_path, text), {})
    with pytest.raises(ConfigError) as info:
        cfg.source.ldap.password()
    assert info.value.problems == [
        ConfigProblem("source.ldap.password_file", "/nonexistent/pw does not exist")
    ]
    assert problems(tmp_path / "idsync.toml", check_files=True) == [
        "source.ldap.password_file: /nonexistent/pw does not exist"
    ]


def test_unreadable_and_empty_secret_files_are_problems(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "empty").write_text("\n")
    text = edit(MINIMAL, "source.ldap", 'bind_dn = "cn=idsync"\npassword_file = "adir"')
    text = edit(text, "ha.zookeeper", 'auth_file = "empty"')
    text = edit(text, "source.ldap", 'ca_file = "missing-ca.pem"')
    assert problems(write(tmp_path, text), check_files=True) == [
        f"source.ldap.password_file: {tmp_path / 'adir'} is a directory, not a file",
        f"ha.zookeeper.auth_file: {tmp_path / 'empty'} is empty",
        f"source.ldap.ca_file: {tmp_path / 'missing-ca.pem'} does not exist",
    ]


def test_credentials_directory(tmp_path: Path) -> None:
    text = edit(MINIMAL, "source.ldap", 'bind_dn = "cn=idsync"\npassword_credential = "ldap-password"')
    text = text.replace('dsn_file = "dsn"', 'dsn_credential = "dsn"')
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ldap-password").write_text("from-systemd\n")
    (creds / "dsn").write_text("host=db user=idsync\n")
    cfg = load_config(write(tmp_path, text), {"CREDENTIALS_DIRECTORY": str(creds)}, check_files=True)
    assert cfg.source.ldap.password() == "from-systemd"
    assert cfg.store.dsn() == "host=db user=idsync"

    without = load_config(tmp_path / "idsync.toml", {})
    with pytest.raises(ConfigError) as info:
        without.source.ldap.password()
    [problem] = info.value.problems
    assert problem.path == "source.ldap.password_credential"
    assert "$CREDENTIALS_DIRECTORY is not set" in problem.message


def test_credential_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('dsn_file = "dsn"', 'dsn_credential = "../etc/shadow"'))
    [problem] = problems(path)
    assert problem.startswith("store.dsn_credential: must be a systemd credential name")


def test_one_secret_one_source(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "store", 'dsn = "host=db"'))
    assert problems(path) == ["store.dsn: set only one of dsn_file, dsn"]


def test_bind_dn_without_password(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "source.ldap", 'bind_dn = "cn=idsync"'))
    assert problems(path) == [
        "source.ldap.password_file: bind_dn is set but no password is "
        "(set password_file, password_credential or password)"
    ]


def test_inline_secret_works_but_never_shows(tmp_path: Path) -> None:
    text = edit(MINIMAL, "source.ldap", 'bind_dn = "cn=idsync"\npassword = "inline-pw"')
    text = edit(text, "ha.zookeeper", 'auth = "idsync:zk-pw"')
    cfg = load_config(write(tmp_path, text), {})
    assert cfg.source.ldap.password() == "inline-pw"
    assert cfg.ha.zookeeper.auth() == ("idsync", "zk-pw")
    assert "inline-pw" not in repr(cfg) and "zk-pw" not in repr(cfg)


def test_bad_inline_secret_value_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "source.ldap", "password = 12345"))
    [problem] = problems(path)
    assert problem.startswith("source.ldap.password: input should be a valid string")
    assert "12345" not in problem


def test_store_needs_a_dsn(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('dsn_file = "dsn"\n', ""))
    assert problems(path) == ["store.dsn: required (set dsn, dsn_file or dsn_credential)"]


def test_config_type_is_exported() -> None:
    assert Config.model_config["extra"] == "forbid"
    assert os.sep  # the module imports cleanly without touching the filesystem


def test_zookeeper_auth_format_is_checked(tmp_path: Path) -> None:
    (tmp_path / "zk-auth").write_text("just-a-password\n")
    path = write(tmp_path, edit(MINIMAL, "ha.zookeeper", 'auth_file = "zk-auth"'))
    assert problems(path, check_files=True) == [
        "ha.zookeeper.auth_file: must hold digest credentials as user:password"
    ]


def test_bad_non_secret_value_is_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, edit(MINIMAL, "target.graph", 'authority_host = "login.example"'))
    assert problems(path) == [
        "target.graph.authority_host: must be an http:// or https:// URL with a host (got 'login.example')"
    ]


def test_parse_config_validates_a_dict_like_a_file(tmp_path: Path) -> None:
    from idsync.config import parse_config

    data = {
        "store": {"dsn": "host=db"},
        "source": {"kind": "openldap", "ldap": {"urls": ["ldap://x"], "base_dns": ["dc=x"]}},
        "target": {"graph": {"graph_endpoint": "http://127.0.0.1:1", "anonymous": True}},
        "ha": {"zookeeper": {"hosts": "z:2181"}},
        "node": {"name": "t"},
    }
    assert parse_config(data, {}).store.dsn() == "host=db"
    data["ha"] = {"zookeeper": {"hosts": "z:2181", "session_timeout_seconds": float("inf")}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert [p.path for p in info.value.problems] == ["ha.zookeeper.session_timeout_seconds"]


def test_example_documents_every_setting() -> None:
    from pydantic import BaseModel

    example = (Path(__file__).resolve().parents[1] / "deploy/config/idsync.example.toml").read_text()

    def keys(model: type[BaseModel], prefix: str) -> list[tuple[str, str]]:
        out = []
        for name, info in model.model_fields.items():
            key = info.alias or name
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out += keys(sub, f"{prefix}{key}.")
            else:
                out.append((f"{prefix}{key}", key))
        return out

    missing = [
        path
        for path, key in keys(Config, "")
        if not re.search(rf"^#? ?{re.escape(key)} = ", example, re.MULTILINE)
    ]
    assert missing == []
