"""Run a command under the syscall policy of systemd/idsync.service, as far as it can be had
without systemd: its SystemCallFilter= (allow @system-service, deny @privileged @resources,
EPERM), RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6, NoNewPrivileges= and
MemoryDenyWriteExecute= (a second seccomp filter with systemd's rules: no mmap that is both
writable and executable, no mprotect/pkey_mprotect to executable, no shmat with SHM_EXEC).

Run by the system python3 (it needs Debian's python3-seccomp), then exec's the command:
    /usr/bin/python3 tests/ops/sandbox.py CMD [ARG...]
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys

import seccomp  # type: ignore[import-not-found]

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
ALLOW = ["@system-service"]
DENY = ["@privileged", "@resources"]
FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups, as `systemd-analyze syscall-filter` lists them."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: str | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif not line.strip() or line.startswith("#"):
            current = None if line.startswith("#") else current
        elif current is not None and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def allowed_syscalls() -> set[str]:
    groups = syscall_groups()
    return expand(ALLOW, groups) - expand(DENY, groups)


def main(argv: list[str]) -> None:
    allowed = allowed_syscalls()
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))  # sets NO_NEW_PRIVS too
    for name in sorted(allowed - {"socket"}):
        with contextlib.suppress(RuntimeError, ValueError):  # unknown to libseccomp or this arch
            f.add_rule(seccomp.ALLOW, name)
    for family in FAMILIES:
        f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, int(family)))
    # MemoryDenyWriteExecute=: stacked filters, so the stricter answer (EPERM) wins, as in systemd.
    wx = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    both = PROT_WRITE | PROT_EXEC
    wx.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
    wx.add_rule(deny, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    wx.add_rule(deny, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    wx.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    wx.load()  # first: the syscall filter below forbids loading another filter
    f.load()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
