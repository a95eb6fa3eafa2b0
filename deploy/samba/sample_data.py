#!/usr/bin/env python3
"""Print LDIF for idsync's sample directory: users and groups under OU=idsync-demo.

Deterministic (the same arguments give the same data), so a demo run can be compared with
another. Users are enabled without a password (userAccountControl 544); groups are global
security groups with 5-40 members each.

    sample_data.py --base-dn DC=demo,DC=idsync,DC=lan --domain demo.idsync.lan > sample.ldif
"""

from __future__ import annotations

import argparse
import random
import sys

FIRST = [
    "Ada",
    "Alan",
    "Anna",
    "Ben",
    "Carla",
    "Chen",
    "Dana",
    "Emil",
    "Eva",
    "Farid",
    "Grace",
    "Hana",
    "Ivan",
    "Jana",
    "Karl",
    "Lena",
    "Luis",
    "Maya",
    "Nils",
    "Omar",
    "Petra",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Ugo",
    "Vera",
    "Wei",
    "Xena",
    "Yusuf",
    "Zoe",
]
LAST = [
    "Adler",
    "Berg",
    "Costa",
    "Dahl",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quist",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Urban",
    "Vogel",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmer",
]
DEPARTMENTS = [
    "Engineering",
    "Finance",
    "Sales",
    "Support",
    "Marketing",
    "Operations",
    "Legal",
    "People",
]


def ldif(base_dn: str, domain: str, users: int, groups: int, ou: str = "idsync-demo") -> str:
    rnd = random.Random(20260101)
    root = f"OU={ou},{base_dn}"
    out = [
        f"dn: {root}\nobjectClass: organizationalUnit\nou: {ou}\n",
    ]
    for sub in ("Staff", "Groups"):
        out.append(f"dn: OU={sub},{root}\nobjectClass: organizationalUnit\nou: {sub}\n")
    user_dns = []
    for i in range(1, users + 1):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        sam = f"u{i:05d}"
        cn = f"{first} {last} ({sam})"
        dn = f"CN={cn},OU=Staff,{root}"
        user_dns.append(dn)
        out.append(
            f"dn: {dn}\n"
            "objectClass: user\n"
            f"sAMAccountName: {sam}\n"
            f"userPrincipalName: {sam}@{domain}\n"
            f"mail: {first.lower()}.{last.lower()}.{i}@{domain}\n"
            f"givenName: {first}\n"
            f"sn: {last}\n"
            f"displayName: {first} {last}\n"
            f"department: {rnd.choice(DEPARTMENTS)}\n"
            f"employeeID: E{i:06d}\n"
            "userAccountControl: 544\n"
        )
    for g in range(1, groups + 1):
        name = f"demo-group-{g:03d}"
        members = rnd.sample(user_dns, min(len(user_dns), rnd.randint(5, 40)))
        out.append(
            f"dn: CN={name},OU=Groups,{root}\n"
            "objectClass: group\n"
            f"sAMAccountName: {name}\n"
            f"description: Sample group {g}\n" + "".join(f"member: {m}\n" for m in members)
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-dn", required=True)
    p.add_argument("--domain", required=True, help="UPN and mail suffix")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--groups", type=int, default=50)
    p.add_argument("--ou", default="idsync-demo", help="top OU created under the base DN")
    args = p.parse_args(argv)
    sys.stdout.write(ldif(args.base_dn, args.domain, args.users, args.groups, args.ou))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
