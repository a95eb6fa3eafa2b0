"""Which handler answers which Graph path and method, and which application permission it needs.

Each route names the permissions its Graph page's "Permissions" table lists for the
Application type (least privileged and every higher one); a token whose `roles` claim holds
none of them gets 403 Authorization_RequestDenied before the handler runs. Pages cited are
under docs-contrib: api-reference/v1.0/api/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from idsync.emulator import applications, delta, directory, groups, roles, users
from idsync.emulator.call import Call, Reply
from idsync.emulator.config import service_principal_id
from idsync.emulator.errors import bad_request, forbidden, method_not_allowed, segment_not_found

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

DELTA = frozenset({"delta", "delta()", "microsoft.graph.delta()", "microsoft.graph.delta"})
KIND_CAST = {"microsoft.graph.user": "user", "microsoft.graph.group": "group"}
AVAILABLE_EXT = frozenset(
    {"getAvailableExtensionProperties", "microsoft.graph.getAvailableExtensionProperties"}
)

Perms = frozenset[str]
# user-list.md, user-get.md, user-delta.md
USER_READ: Perms = frozenset(
    {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
# user-post-users.md, user-update.md
USER_WRITE: Perms = frozenset({"User.ReadWrite.All", "Directory.ReadWrite.All"})
# user-delete.md: User.ReadWrite.All, "Higher privileged: Not available" (Directory.ReadWrite.All
# cannot delete users); directory-deleteditems-restore.md / -delete.md add User.DeleteRestore.All
USER_DELETE: Perms = frozenset({"User.ReadWrite.All", "User.DeleteRestore.All"})
# user-list-memberof.md
MEMBER_OF: Perms = frozenset(
    {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
# group-list.md, group-get.md, group-delta.md, group-list-members.md
GROUP_READ: Perms = frozenset(
    {
        "GroupMember.Read.All",
        "Group.Read.All",
        "GroupMember.ReadWrite.All",
        "Group.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    }
)
# group-post-groups.md
GROUP_CREATE: Perms = frozenset({"Group.Create", "Group.ReadWrite.All", "Directory.ReadWrite.All"})
# group-update.md, group-delete.md
GROUP_WRITE: Perms = frozenset({"Group.ReadWrite.All", "Directory.ReadWrite.All"})
# group-post-members.md, group-delete-members.md
MEMBER_WRITE: Perms = frozenset(
    {"GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"}
)
# directoryobject-get.md
DIROBJ_READ: Perms = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
# directoryobject-getavailableextensionproperties.md: Directory.Read.All, nothing higher listed
AVAILABLE_EXT_READ: Perms = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
# domain-list.md
DOMAIN_READ: Perms = frozenset(
    {"Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
# application-get.md, application-list.md, application-list-extensionproperty.md
APP_READ: Perms = frozenset(
    {
        "Application.Read.All",
        "Application.ReadWrite.OwnedBy",
        "Application.ReadWrite.All",
        "Directory.Read.All",
    }
)
# application-post-extensionproperty.md, extensionproperty-delete.md (OwnedBy: owned apps only)
APP_WRITE: Perms = frozenset({"Application.ReadWrite.OwnedBy", "Application.ReadWrite.All"})
# serviceprincipal-get.md
SP_READ: Perms = frozenset(
    {
        "Application.Read.All",
        "Application.ReadWrite.OwnedBy",
        "Application.ReadWrite.All",
        "Directory.Read.All",
    }
)
# serviceprincipal-list-memberof.md
SP_MEMBER_OF: Perms = frozenset({"Application.Read.All", "Directory.Read.All", "Application.ReadWrite.All"})
# organization-get.md
ORG_READ: Perms = frozenset(
    {"Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "Directory.ReadWrite.All"}
)
# directoryrole-list.md, directoryrole-get.md, directoryrole-list-members.md
ROLE_READ: Perms = frozenset(
    {
        "RoleManagement.Read.Directory",
        "Directory.Read.All",
        "RoleManagement.ReadWrite.Directory",
        "Directory.ReadWrite.All",
    }
)
# directoryrole-post-members.md, directoryrole-delete-member.md
ROLE_WRITE: Perms = frozenset({"RoleManagement.ReadWrite.Directory"})

Handler = tuple[Perms, Callable[[], Reply]]


def route(em: Emulator, call: Call) -> Reply:
    """Answer a call that passed auth, faults and throttling. Raises GraphError for Graph errors."""
    segs = call.path.strip("/").split("/") if call.path.strip("/") else []
    n = len(segs)
    if n == 0:
        raise segment_not_found("")
    head = segs[0]
    if head == "users":
        if n == 1:
            return _pick(
                call,
                GET=(USER_READ, lambda: users.list_users(em, call)),
                POST=(USER_WRITE, lambda: users.create_user(em, call)),
            )
        if n == 2 and segs[1] in DELTA:
            return _pick(call, GET=(USER_READ, lambda: delta.delta(em, call, "user")))
        ident = segs[1]
        if n == 2:
            return _pick(
                call,
                GET=(USER_READ, lambda: users.get_user(em, call, ident)),
                PATCH=(USER_WRITE, lambda: users.patch_user(em, call, ident)),
                DELETE=(USER_DELETE, lambda: users.delete_user(em, call, ident)),
            )
        # user-list-manager.md, user-post-manager.md, user-delete-manager.md
        if n == 3 and segs[2] == "manager":
            return _pick(call, GET=(USER_READ, lambda: users.get_manager(em, call, ident)))
        if n == 4 and segs[2] == "manager" and segs[3] == "$ref":
            return _pick(
                call,
                PUT=(USER_WRITE, lambda: users.put_manager_ref(em, call, ident)),
                DELETE=(USER_WRITE, lambda: users.delete_manager_ref(em, call, ident)),
            )
        if n == 3 and segs[2] == "memberOf":
            return _pick(call, GET=(MEMBER_OF, lambda: roles.member_of(em, call, users.find_user(em, ident))))
        raise segment_not_found(segs[2])
    if head == "groups":
        if n == 1:
            return _pick(
                call,
                GET=(GROUP_READ, lambda: groups.list_groups(em, call)),
                POST=(GROUP_CREATE, lambda: groups.create_group(em, call)),
            )
        if n == 2 and segs[1] in DELTA:
            return _pick(call, GET=(GROUP_READ, lambda: delta.delta(em, call, "group")))
        gid = segs[1]
        if n == 2:
            return _pick(
                call,
                GET=(GROUP_READ, lambda: groups.get_group(em, call, gid)),
                PATCH=(GROUP_WRITE, lambda: groups.patch_group(em, call, gid)),
                DELETE=(GROUP_WRITE, lambda: groups.delete_group(em, call, gid)),
            )
        if segs[2] != "members":
            raise segment_not_found(segs[2])
        if n == 3:
            return _pick(call, GET=(GROUP_READ, lambda: groups.list_members(em, call, gid)))
        if n == 4 and segs[3] == "$ref":
            return _pick(
                call,
                GET=(GROUP_READ, lambda: groups.list_members(em, call, gid, refs=True)),
                POST=(MEMBER_WRITE, lambda: groups.add_member_ref(em, call, gid)),
            )
        mid = segs[3]
        if n == 4:
            # without /$ref the member object itself is deleted: that needs the object's own right
            perms = USER_DELETE if em.store.live("user", mid) is not None else GROUP_WRITE
            return _pick(call, DELETE=(perms, lambda: groups.delete_member_object(em, call, gid, mid)))
        if n == 5 and segs[4] == "$ref":
            return _pick(call, DELETE=(MEMBER_WRITE, lambda: groups.remove_member_ref(em, call, gid, mid)))
        raise segment_not_found(segs[-1])
    if head == "directory" and n >= 2 and segs[1] == "deletedItems":
        # directory-deleteditems-list.md: the permission of the type listed
        if n == 2:
            return _pick(call, GET=(USER_READ | GROUP_READ, lambda: directory.list_deleted(em, call, None)))
        if n == 3 and segs[2] in KIND_CAST:
            kind = KIND_CAST[segs[2]]
            perms = USER_READ if kind == "user" else GROUP_READ
            return _pick(call, GET=(perms, lambda: directory.list_deleted(em, call, kind)))
        oid = segs[2]
        if n == 3:
            return _pick(
                call,
                GET=(USER_READ, lambda: directory.get_deleted(em, call, oid)),
                DELETE=(USER_DELETE, lambda: directory.purge(em, call, oid)),
            )
        if n == 4 and segs[3] in ("restore", "microsoft.graph.restore"):
            return _pick(call, POST=(USER_DELETE, lambda: directory.restore(em, call, oid)))
        raise segment_not_found(segs[-1])
    if head == "directoryObjects" and n == 2:
        oid = segs[1]
        if oid in AVAILABLE_EXT:
            return _pick(
                call, POST=(AVAILABLE_EXT_READ, lambda: applications.available_extension_properties(em, call))
            )
        return _pick(call, GET=(DIROBJ_READ, lambda: directory.get_directory_object(em, call, oid)))
    if head == "domains" and n == 1:
        return _pick(call, GET=(DOMAIN_READ, lambda: directory.list_domains(em, call)))
    if head == "applications" or head.startswith("applications("):
        return _applications(em, call, segs)
    if head == "servicePrincipals" and n == 1:
        return _pick(call, GET=(SP_READ, lambda: applications.list_service_principals(em, call)))
    if head == "servicePrincipals" or head.startswith("servicePrincipals("):
        sp, rest = (segs[1], segs[2:]) if head == "servicePrincipals" else (head, segs[1:])
        if not rest:
            return _pick(call, GET=(SP_READ, lambda: applications.get_service_principal(em, call, sp)))
        if rest == ["memberOf"]:
            return _pick(
                call,
                GET=(
                    SP_MEMBER_OF,
                    lambda: roles.principal_member_of(
                        em, call, service_principal_id(applications.find_service_principal(em, sp).client_id)
                    ),
                ),
            )
        raise segment_not_found(rest[0])
    if head == "organization" and n == 1:
        return _pick(call, GET=(ORG_READ, lambda: directory.get_organization(em, call)))
    if head == "directoryRoles" or head.startswith("directoryRoles("):
        return _directory_roles(em, call, segs)
    if head == "$batch":
        raise bad_request("Nested $batch requests are not supported.", code="BadRequest")
    raise segment_not_found(head)


def _applications(em: Emulator, call: Call, segs: list[str]) -> Reply:
    # `/applications/{id}/...` and `/applications(appId='{appId}')/...` address the same object
    if segs[0] == "applications":
        if len(segs) == 1:
            return _pick(call, GET=(APP_READ, lambda: applications.list_applications(em, call)))
        app, rest = segs[1], segs[2:]
    else:
        app, rest = segs[0], segs[1:]
    if not rest:
        return _pick(call, GET=(APP_READ, lambda: applications.get_application(em, call, app)))
    if rest[0] != "extensionProperties":
        raise segment_not_found(rest[0])
    if len(rest) == 1:
        return _pick(
            call,
            GET=(APP_READ, lambda: applications.list_extension_properties(em, call, app)),
            POST=(APP_WRITE, lambda: applications.create_extension_property(em, call, app)),
        )
    if len(rest) == 2:
        ext = rest[1]
        return _pick(
            call,
            GET=(APP_READ, lambda: applications.get_extension_property(em, call, app, ext)),
            DELETE=(APP_WRITE, lambda: applications.delete_extension_property(em, call, app, ext)),
        )
    raise segment_not_found(rest[-1])


def _directory_roles(em: Emulator, call: Call, segs: list[str]) -> Reply:
    if segs[0] == "directoryRoles":
        if len(segs) == 1:
            return _pick(call, GET=(ROLE_READ, lambda: roles.list_roles(em, call)))
        role, rest = segs[1], segs[2:]
    else:
        role, rest = segs[0], segs[1:]
    if not rest:
        return _pick(call, GET=(ROLE_READ, lambda: roles.get_role(em, call, role)))
    if rest[0] != "members":
        raise segment_not_found(rest[0])
    if len(rest) == 1:
        return _pick(call, GET=(ROLE_READ, lambda: roles.list_role_members(em, call, role)))
    if len(rest) == 2 and rest[1] == "$ref":
        return _pick(
            call,
            GET=(ROLE_READ, lambda: roles.list_role_members(em, call, role, refs=True)),
            POST=(ROLE_WRITE, lambda: roles.add_role_member(em, call, role)),
        )
    if len(rest) == 3 and rest[2] == "$ref":
        mid = rest[1]
        return _pick(call, DELETE=(ROLE_WRITE, lambda: roles.remove_role_member(em, call, role, mid)))
    raise segment_not_found(rest[-1])


def _pick(call: Call, **handlers: Handler) -> Reply:
    h = handlers.get(call.method)
    if h is None:
        raise method_not_allowed()
    perms, fn = h
    if not (call.roles & perms):
        raise forbidden()
    return fn()
