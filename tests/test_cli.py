"""`idsync check-config`: every problem as `<path>: <why>` and exit 2; a summary and 0 when valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from idsync.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "config" / "idsync.example.toml"
IDSYNC = Path(sys.executable).parent / "idsync"

VALID = """\
[node]
name = "a"
cluster = "test"
[store]
dsn_file = "dsn"
[source]
kind = "openldap"
[source.ldap]
urls = ["ldap://127.0.0.1:3890"]
base_dns = ["dc=example,dc=com"]
[target.graph]
graph_endpoint = "https://127.0.0.1:8443"
anonymous = true
[ha.zookeeper]
hosts = "127.0.0.1:2181/idsync"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "dsn").write_text("postgresql://idsync:pw@127.0.0.1/idsync\n")
    path = tmp_path / "idsync.toml"
    path.write_text(VALID)
    return path


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_file_prints_a_summary(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, "check-config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{config}: OK",
        "  node       a (cluster test)",
        "  source     openldap ldap://127.0.0.1:3890 (delta syncrepl)",
        "  target     https://127.0.0.1:8443 (anonymous)",
        "  zookeeper  127.0.0.1:2181/idsync",
        "  store      schema idsync_a",
        "  admin      127.0.0.1:9470",
    ]
    assert "pw" not in out


def test_path_falls_back_to_global_config(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, "--config", str(config), "check-config")
    assert code == 0 and out.startswith(f"{config}: OK")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t + "[bogus]\n", "bogus: unknown setting"),
        (lambda t: t.replace('cluster = "test"', 'cluster = "test'), "{path}: TOML syntax error at line 3"),
        (
            lambda t: t.replace('cluster = "test"', "cluster = 7"),
            "node.cluster: input should be a valid string (got 7)",
        ),
        (
            lambda t: t.replace('"ldap://127.0.0.1:3890"', '"127.0.0.1:3890"'),
            "source.ldap.urls[0]: must start with ldap:// or ldaps:// (got '127.0.0.1:3890')",
        ),
        (
            lambda t: t + "[ha]\nretry_timeout_seconds = 15\n",
            "ha.zookeeper.session_timeout_seconds: must be at least ha.loop_interval_seconds + "
            "2 * ha.retry_timeout_seconds (10 + 2 * 15 = 40), is 30",
        ),
        (
            lambda t: t.replace('dsn_file = "dsn"', 'dsn_file = "gone"'),
            "store.dsn_file: {dir}/gone does not exist",
        ),
    ],
    ids=["unknown-key", "syntax", "wrong-type", "bad-url", "timing-rule", "missing-secret"],
)
def test_each_error_class_exits_2_with_a_path(
    config: Path, capsys: pytest.CaptureFixture[str], change: object, expected: str
) -> None:
    assert callable(change)
    config.write_text(change(VALID))
    code, out, err = check(capsys, "check-config", str(config))
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(expected.format(path=config, dir=config.parent))


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(capsys, "check-config", str(tmp_path / "absent.toml"))
    assert (code, err) == (2, f"{tmp_path / 'absent.toml'}: no such file\n")


def test_syntax_error_has_line_and_column(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(VALID.replace("[source]", "[source"))
    code, _, err = check(capsys, "check-config", str(config))
    assert (code, err) == (
        2,
        f"{config}: TOML syntax error at line 6, column 8: expected ']' at the end of a table declaration\n",
    )


def test_secret_problems_never_print_the_secret(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(VALID.replace("[source.ldap]\n", '[source.ldap]\npassword = "hunter2"\n'))
    code, _, err = check(capsys, "check-config", str(config))
    assert code == 2
    assert err == "source.ldap.bind_dn: a password is set but bind_dn is not\n"


def test_env_override_reaches_check_config(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDSYNC_HA__ZOOKEEPER__HOSTS", "zk9:2181")
    code, out, _ = check(capsys, "check-config", str(config))
    assert code == 0 and "  zookeeper  zk9:2181" in out.splitlines()


def test_example_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(EXAMPLE, tmp_path / "idsync.toml")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("store-dsn", "ldap-password", "graph-client-secret"):
        (secrets / name).write_text(f"{name}-value\n")
    code, out, err = check(capsys, "check-config", str(tmp_path / "idsync.toml"))
    assert (code, err) == (0, "")
    assert "  source     ad ldaps://dc1.corp.example.com, ldaps://dc2.corp.example.com" in out


def run_installed(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(IDSYNC), *argv], capture_output=True, text=True, check=False)


def test_installed_command_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nname = 'a'\nname = 'b'\n[source]\nkind = 3\n")
    proc = subprocess.run(
        [str(IDSYNC), "check-config", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"{bad}: TOML syntax error at line 3, column")
    assert "Traceback" not in proc.stderr

    bad.write_text(VALID.replace('kind = "openldap"', "kind = 3"))
    proc = subprocess.run(
        [str(IDSYNC), "check-config", str(bad)], capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stderr) == (2, "source.kind: input should be 'ad' or 'openldap' (got 3)\n")


def test_inline_secrets_draw_a_warning(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = VALID.replace('dsn_file = "dsn"', 'dsn = "postgresql://idsync:inline-pw@db/idsync"')
    config.write_text(text.replace("[source.ldap]\n", '[source.ldap]\nbind_dn = "cn=x"\npassword = "pw2"\n'))
    code, out, _ = check(capsys, "check-config", str(config))
    assert code == 0
    assert out.splitlines()[-2:] == [
        "warning: store.dsn: secret written inline; prefer dsn_file or dsn_credential",
        "warning: source.ldap.password: secret written inline; prefer password_file or password_credential",
    ]
    assert "inline-pw" not in out and "pw2" not in out

    config.write_text(VALID.replace('dsn_file = "dsn"', 'dsn = "host=db user=idsync"'))
    code, out, _ = check(capsys, "check-config", str(config))
    assert code == 0 and "warning" not in out


def test_bad_sync_rules_are_config_problems(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = config.parent / "rules.toml"
    rules.write_text('[user.flows]\njobTitle = "upper(source.title"\nfavouriteColour = "source.c"\n')
    config.write_text(VALID + f'[sync]\nrules_file = "{rules}"\n')
    code, out, err = check(capsys, "check-config", str(config))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"sync.rules_file ({rules}): user.flows.") for line in lines)
    assert "CEL compile error" in err and "upper(source.title" in err
    assert "unknown target attribute 'favouriteColour'" in err
