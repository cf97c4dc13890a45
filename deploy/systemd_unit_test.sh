#!/usr/bin/env bash
# Checks the shipped unit: systemd-analyze verify when available, and the
# settings the daemon depends on.
set -euo pipefail
unit=${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-epx}/deploy/epxd.service
[[ -f $unit ]] || unit=deploy/epxd.service
for key in "ExecStart=/usr/local/bin/epxd --config /etc/epx/epxd.conf" "RuntimeDirectory=epx" \
           "LimitMEMLOCK=infinity" "NoNewPrivileges=yes" "ProtectSystem=strict" "KillSignal=SIGTERM" \
           "ExecReload=/bin/kill -HUP \$MAINPID"; do
  grep -qF "$key" "$unit" || { echo "FAIL: $unit lacks '$key'"; exit 1; }
done
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify needs the binaries it names; check only the unit's syntax here.
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  if grep -E "Unknown (key|section)|Failed to parse|Invalid" <<<"$out"; then
    echo "FAIL: systemd-analyze rejects $unit"; exit 1
  fi
fi
echo "PASS: $unit"
