#!/usr/bin/env bash
# Installs epxd and epxctl as a systemd service on this node:
#   bazel build -c opt //daemon:epxd //tools:epxctl && sudo deploy/install.sh
# Creates the `epx` user and group (add serving engines' users to the group so
# they may use the control socket), installs /etc/epx/epxd.conf if absent
# (an existing config is kept), and enables the service.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "install.sh: run as root" >&2; exit 1; }
for b in bazel-bin/daemon/epxd bazel-bin/tools/epxctl; do
  [[ -x $b ]] || { echo "install.sh: $b missing; build first (see the header of this script)" >&2; exit 1; }
done

getent group epx >/dev/null || groupadd --system epx
getent passwd epx >/dev/null || useradd --system --gid epx --no-create-home --shell /usr/sbin/nologin epx
install -m 0755 bazel-bin/daemon/epxd bazel-bin/tools/epxctl /usr/local/bin/
install -d -m 0755 /etc/epx /usr/local/share/doc/epx
[[ -f /etc/epx/epxd.conf ]] || install -m 0644 deploy/epxd.conf /etc/epx/epxd.conf
install -m 0644 README.md /usr/local/share/doc/epx/README.md
install -m 0644 deploy/epxd.service /etc/systemd/system/epxd.service
/usr/local/bin/epxd --config /etc/epx/epxd.conf --check-config >/dev/null
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable --now epxd
  systemctl --no-pager status epxd | head -n 5
else
  echo "install.sh: no systemd here; start with: epxd --config /etc/epx/epxd.conf"
fi
echo "EPX installed. Clients use /run/epx/epxd.sock (EPX_SOCKET); 'epxctl status' shows the rails."
grep -Eq '^[[:space:]]*peer_(secret_file|tls_cert_file)' /etc/epx/epxd.conf ||
  echo "install.sh: the Peer port is unauthenticated: set peer_secret_file or peer_tls_* in /etc/epx/epxd.conf (README, \"Peer security\")"
