#!/usr/bin/env bash
# Installs the Debian packages idsync's tests and demo need, only those missing.
# Runs `apt-get update` once, and only when something has to be installed.
set -euo pipefail
# - libzookeeper-java + default-jre-headless: the harness runs ZooKeeper's jar itself; the
#   `zookeeper` package would add only a system service and a full (X11) JRE.
# - samba-dsdb-modules, samba-ad-provision, samba-vfs-modules: only Recommends of `samba`, but an
#   AD DC needs them (provisioning loads vfs/xattr_tdb.so from samba-vfs-modules).
# - python3-venv: `make venv`; iproute2: `ss` names the holder of Samba's port 389 in errors.
# - prometheus, prometheus-alertmanager: the demo and tests/ops/test_alerts_live.py run their own
#   instances on loopback (deploy/demo/monitoring.py), never the system services; amtool checks
#   deploy/alertmanager. systemd: only for systemd-analyze (verifies systemd/*.service).
#   python3-yaml: tests/ops reads compose.yaml with it when the venv has no PyYAML;
#   python3-seccomp: tests/ops runs the daemon under the units' syscall filter.
# - chromium: the web console's browser test (Playwright drives this system browser; it never
#   downloads one).
PKGS=(
  postgresql
  libzookeeper-java default-jre-headless
  samba samba-dsdb-modules samba-ad-provision samba-vfs-modules
  slapd ldap-utils
  prometheus prometheus-alertmanager
  chromium
  systemd
  python3-venv python3-yaml python3-seccomp iproute2
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# slapd asks debconf questions; answer them so the install never blocks.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts these as system services; the harness runs its own instances.
for svc in zookeeper slapd samba-ad-dc smbd nmbd prometheus prometheus-node-exporter prometheus-alertmanager; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
