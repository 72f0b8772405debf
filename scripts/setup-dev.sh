#!/usr/bin/env bash
# Installs what the demo and the test suite need on a Debian 12 machine (run as root):
# Deno from the npm package `deno` into .tools/, and the real peers the tests start
# (PostgreSQL 15, snmpd, snmpsim, pymodbus, OpenIPMI's ipmi_sim, freeipmi, node exporter; Prometheus,
# whose agent mode the `peers` benchmark runs beside the collector), and
# the fault injectors of the torture suite (libfaketime steps the wall clock, strace kills the
# collector at its n-th spool write, e2fsprogs makes the small filesystem that fills up).
# Idempotent: installed pieces are left as they are. Packages go in with --no-install-recommends,
# so every Python module a peer imports is listed by name (pymodbus's server imports serial and
# serial_asyncio). The script ends by starting each peer once: a missing piece fails the set-up here,
# by name, not as a wall of failed tests.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
PACKAGES=(
  postgresql-15 postgresql-15-cron openssl
  snmpd snmp snmpsim
  python3-pymodbus python3-serial python3-serial-asyncio
  openipmi freeipmi-tools
  prometheus-node-exporter prometheus
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

# Each peer once, as the tests start it; the first that fails names itself.
peer_failed() { echo "setup-dev.sh: peer '$1' does not start: $2" >&2; exit 1; }
check() { # NAME COMMAND...: the command must exit 0 within 20 s
  local name=$1 out
  shift
  out=$(timeout 20 "$@" 2>&1) || peer_failed "$name" "$(echo "$out" | tail -3)"
}
check postgresql bash -c 'd=$(mktemp -d) && chown postgres "$d" &&
  runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$d/data" -A trust >/dev/null &&
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$d/data" -o "-k $d -c listen_addresses=" -w start >/dev/null &&
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$d/data" -m fast -w stop >/dev/null; r=$?; rm -rf "$d"; exit $r'
check snmpd snmpd -v
check snmpsim bash -c 'snmpsimd --version 2>&1 | grep -q "SNMP Simulator"'
check pymodbus /usr/bin/python3 -c 'from pymodbus.server.async_io import ModbusTcpServer
from pymodbus.framer.rtu_framer import ModbusRtuFramer
from pymodbus.payload import BinaryPayloadDecoder'
check ipmi_sim bash -c 'ipmi_sim --version 2>&1 | grep -q "IPMI Simulator"'
check ipmi-sensors ipmi-sensors --version
check node-exporter prometheus-node-exporter --version
check faketime faketime --version
check strace strace -V
check mkfs.ext4 mkfs.ext4 -V
echo "Ready: $(deno --version | head -1); peers start: postgresql snmpd snmpsim pymodbus ipmi_sim ipmi-sensors node-exporter"
