"""Which Debian package provides a file a service failed to load.

A fresh Debian 12 machine has only what deploy/local/install-deps.sh installs, with
--no-install-recommends: a module that `samba` merely recommends is missing there and nowhere
else. When a service's log says it could not open a file, the harness names the package, so the
error reads "install samba-vfs-modules" instead of a dlopen message.
"""

from __future__ import annotations

import re

# Path prefixes (as Debian 12 lays them out) -> the package that ships them; first match wins.
# Checked with `dpkg -S` on a machine that has them.
PROVIDERS: tuple[tuple[str, str], ...] = (
    ("/usr/lib/x86_64-linux-gnu/samba/vfs/", "samba-vfs-modules"),
    ("/usr/lib/aarch64-linux-gnu/samba/vfs/", "samba-vfs-modules"),
    ("/usr/lib/x86_64-linux-gnu/samba/ldb/", "samba-dsdb-modules"),
    ("/usr/lib/aarch64-linux-gnu/samba/ldb/", "samba-dsdb-modules"),
    ("/usr/share/samba/setup/", "samba-ad-provision"),
    ("/usr/lib/ldap/", "slapd"),
    ("/usr/share/java/zookeeper", "libzookeeper-java"),
    ("/usr/share/java/slf4j", "libslf4j-java"),
    ("/usr/share/java/netty", "libnetty-java"),
    ("/usr/bin/promtool", "prometheus"),
    ("/usr/bin/amtool", "prometheus-alertmanager"),
    ("/usr/bin/java", "default-jre-headless"),
)

# How services report a file they could not load, and how to turn that into a path: Samba's
# dlopen errors carry the path; slaptest names only the module, which it looks for in modulepath.
_MISSING = (
    (re.compile(r"Error loading module '([^']+)'"), "{}"),
    (re.compile(r"(/\S+?): cannot open shared object file"), "{}"),
    (re.compile(r"lt_dlopenext failed: \((\w+)\) file not found"), "/usr/lib/ldap/{}.la"),
    (re.compile(r"No such file or directory: '(/[^']+)'"), "{}"),
)


def provider(path: str) -> str | None:
    """The Debian package that ships `path`, if the table knows it."""
    for prefix, package in PROVIDERS:
        if path.startswith(prefix):
            return package
    return None


def missing_files(log_text: str) -> list[str]:
    """Absolute paths a log says could not be loaded, in order of appearance, without repeats."""
    seen: list[str] = []
    for line in log_text.splitlines():
        for pattern, template in _MISSING:
            m = pattern.search(line)
            if m and template.format(m.group(1)) not in seen:
                seen.append(template.format(m.group(1)))
    return seen


def install_hint(log_text: str) -> str:
    """ "missing /x/y.so: install Debian package P" for each missing file the log names, or ""."""
    hints = []
    for path in missing_files(log_text):
        package = provider(path)
        if package:
            hints.append(
                f"missing {path}: install the Debian package {package} "
                "(deploy/local/install-deps.sh lists what the harness needs)"
            )
        else:
            hints.append(f"missing {path}: `apt-file search {path}` names the package that ships it")
    return "; ".join(hints)
