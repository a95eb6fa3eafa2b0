#!/bin/bash
# Provision the demo domain on first start, load the sample users and groups, then run Samba
# in the foreground. Settings come from the environment (see the Dockerfile's ENV).
set -euo pipefail

realm="${SAMBA_REALM:?}"
domain="${SAMBA_DOMAIN:?}"
pw_file="${SAMBA_ADMIN_PASSWORD_FILE:?}"
[ -r "$pw_file" ] || { echo "samba: $pw_file is not readable (the admin password)" >&2; exit 1; }
admin_pw="$(tr -d '\r\n' < "$pw_file")"
# DEMO.IDSYNC.LAN -> DC=demo,DC=idsync,DC=lan
base_dn="$(echo "$realm" | tr 'A-Z' 'a-z' | sed 's/^/DC=/; s/\./,DC=/g')"
sam=/var/lib/samba/private/sam.ldb

if [ ! -f "$sam" ]; then
  echo "samba: provisioning $realm ($base_dn)"
  rm -f /etc/samba/smb.conf
  # sysvol ACLs in a tdb: no xattr support needed from the container's storage.
  samba-tool domain provision \
    --realm="$realm" --domain="$domain" --adminpass="$admin_pw" \
    --server-role=dc --use-rfc2307 --dns-backend=NONE --host-name=dc1 \
    --option="vfs objects = dfs_samba4 acl_xattr xattr_tdb"
  cat >> /etc/samba/smb.conf <<CONF

[global]
	ldap server require strong auth = no
	server services = ldap, cldap, kdc, rpc
	log level = 1
CONF
  echo "samba: loading ${SAMPLE_USERS} users and ${SAMPLE_GROUPS} groups"
  python3 /usr/local/share/idsync/sample_data.py \
    --base-dn "$base_dn" --domain "$(echo "$realm" | tr 'A-Z' 'a-z')" \
    --users "${SAMPLE_USERS}" --groups "${SAMPLE_GROUPS}" > /tmp/sample.ldif
  ldbadd -H "$sam" /tmp/sample.ldif >/dev/null
  rm -f /tmp/sample.ldif
fi
# smb.conf lives outside the volume: keep the provisioned one next to the database.
if [ -f /etc/samba/smb.conf ]; then
  cp /etc/samba/smb.conf /var/lib/samba/smb.conf.provisioned
else
  cp /var/lib/samba/smb.conf.provisioned /etc/samba/smb.conf
fi
exec samba --foreground --no-process-group --debug-stdout
