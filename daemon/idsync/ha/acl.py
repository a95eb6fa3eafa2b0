"""ZooKeeper access control: every znode idsync creates carries the cluster's digest ACL, and a
session whose credentials the cluster's znodes refuse is a fatal, clearly named error.

kazoo applies `default_acl` (the Coordinator sets it from `[ha.zookeeper] auth`) to every
`create`, `ensure_path` and transaction create, so daemons and the CLI create alike. What this
module adds: a start-up probe (so a node with wrong credentials stops at once instead of looping
on NoAuth), tightening of znodes an older CLI created world-open, and the CLI's control session,
which never creates the cluster's structure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from kazoo.exceptions import KazooException, NoAuthError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import ACL, Permissions, make_digest_acl, make_digest_acl_credential

if TYPE_CHECKING:
    from idsync.ha.zk import Coordinator, Paths

log = structlog.get_logger(__name__)


class ZkAccessDenied(Exception):
    """ZooKeeper refused this session access to a cluster znode: fatal, never retried.

    The message names the path, the operation and the credential in use (never the secret).
    """

    def __init__(self, path: str, operation: str, auth: tuple[str, str] | None) -> None:
        self.path = path
        self.operation = operation
        self.credential = credential(auth)
        hint = (
            "give [ha.zookeeper] auth the credentials the cluster was created with"
            if auth is None
            else "check [ha.zookeeper] auth: the cluster's znodes were created with other credentials"
        )
        super().__init__(f"ZooKeeper denied {operation} of {path} to {self.credential}: {hint}")


class ClusterNotFound(Exception):
    """The CLI found no cluster of that name (no node ever started against this ZooKeeper)."""


def credential(auth: tuple[str, str] | None) -> str:
    """How the session authenticates, for messages: the user name, never the password."""
    return f"digest user {auth[0]!r}" if auth else "an unauthenticated session (no [ha.zookeeper] auth)"


def acl_for(auth: tuple[str, str] | None) -> list[ACL] | None:
    """The ACL every idsync znode gets: all permissions for the cluster's digest identity."""
    if auth is None:
        return None
    return [make_digest_acl(auth[0], auth[1], all=True)]


def _allows(acls: list[ACL], auth: tuple[str, str] | None, perm: int) -> bool:
    mine = make_digest_acl_credential(*auth) if auth else None
    for a in acls:
        if not a.perms & perm:
            continue
        if a.id.scheme == "world" and a.id.id == "anyone":
            return True
        if mine is not None and a.id.scheme == "digest" and a.id.id == mine:
            return True
    return False


def _world_open(acls: list[ACL]) -> bool:
    return any(a.id.scheme == "world" and a.id.id == "anyone" for a in acls)


def cluster_paths(paths: Paths) -> list[str]:
    return [
        paths.base,
        paths.members,
        paths.epoch,
        paths.approvals,
        paths.release,
        paths.switchover,
        paths.failover,
        paths.pause,
        f"{paths.base}/history",  # ha/history.py: the election transaction creates entries in it
        f"{paths.base}/rules",  # ha/rules_zk.py: the cluster's versioned sync rules
    ]


def check_access(coord: Coordinator, *, tighten: bool) -> None:
    """Raise ZkAccessDenied unless this session may read and write every existing cluster znode.

    With `tighten`, znodes that are world-open although the cluster has credentials (created by
    a CLI without them) get the cluster's ACL.
    """
    client = coord.client
    auth = coord.settings.auth
    timeout = coord.settings.retry_timeout
    wanted = acl_for(auth)
    for path in cluster_paths(coord.paths):
        try:
            client.get_async(path).get(timeout=timeout)
            acls, _ = client.get_acls_async(path).get(timeout=timeout)
        except NoNodeError:
            continue
        except NoAuthError as exc:
            raise ZkAccessDenied(path, "read", auth) from exc
        except (KazooException, KazooTimeoutError):
            continue  # not an access problem: the caller's own requests report it
        if not _allows(acls, auth, Permissions.WRITE):
            raise ZkAccessDenied(path, "write", auth)
        if tighten and wanted is not None and _world_open(acls):
            try:
                client.set_acls_async(path, wanted).get(timeout=timeout)
                log.warning("ha.acl_tightened", path=path, credential=credential(auth))
            except (KazooException, KazooTimeoutError) as exc:
                log.warning("ha.acl_tighten_failed", path=path, error=repr(exc))
    if wanted is None and tighten:  # the daemon says so once; the CLI stays quiet
        log.warning("ha.acl_open", reason="no [ha.zookeeper] auth: the cluster's znodes are world-writable")


def connect_control(coord: Coordinator, timeout: float) -> None:
    """Open the CLI's session: connect and check access, but never create the cluster's znodes.

    A CLI that created them would do so with its own (maybe absent) credentials; only a daemon,
    with the cluster's configured credentials, sets the cluster up.
    """
    from idsync.ha.zk import CoordinationError

    try:
        coord.client.start(timeout=timeout)
    except KazooTimeoutError as exc:
        coord.client.stop()
        raise CoordinationError(
            f"cannot reach ZooKeeper at {coord.settings.hosts} within {timeout:.0f}s"
        ) from exc
    coord._state = "connected"
    try:
        exists = coord.client.exists_async(coord.paths.epoch).get(timeout=timeout)
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"ZooKeeper read of {coord.paths.epoch} failed: {exc!r}") from exc
    if exists is None:
        raise ClusterNotFound(
            f"no idsync cluster at {coord.paths.base} on {coord.settings.hosts} "
            "(start a node first, or check --cluster / the chroot)"
        )
    check_access(coord, tighten=False)
