#!/usr/bin/env bash
# Installs what the demo and the test suite need on a Debian 12 machine (run as root):
# Deno from the npm package `deno` into .tools/, and the real peers the tests start
# (PostgreSQL 15, snmpd, snmpsim, pymodbus, OpenIPMI's ipmi_sim, freeipmi, node exporter), and
# the fault injectors of the torture suite (libfaketime steps the wall clock, strace kills the
# collector at its n-th spool write, e2fsprogs makes the small filesystem that fills up).
# Idempotent: installed pieces are left as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
PACKAGES=(
  postgresql-15 postgresql-contrib-15 postgresql-15-cron openssl
  snmpd snmp snmpsim
  python3-pymodbus
  openipmi freeipmi-tools
  prometheus-node-exporter
  systemd iproute2 procps
  faketime strace e2fsprogs
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package services must not start on their own: the tests start their own peers.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x .tools/node_modules/.bin/deno ] || ! .tools/node_modules/.bin/deno --version | grep -q "deno $DENO_VERSION"; then
  echo "Installing Deno $DENO_VERSION from npm into .tools/"
  mkdir -p .tools
  echo '{"private":true}' > .tools/package.json
  (cd .tools && npm install --no-save --no-audit --no-fund "deno@$DENO_VERSION" >/dev/null)
fi
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
deno install --frozen >/dev/null 2>&1 || deno install
echo "Ready: $(deno --version | head -1)"
