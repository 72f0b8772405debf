#!/bin/sh
# Installs kwollector on a rack host (run as root):
#   /usr/local/bin/kwollector                      the binary (dist/kwollector, or the one given)
#   /etc/systemd/system/kwollector.service         and kwollector-wattmetre@.service
#   /etc/kwollect/kwollector.yaml                  commented default config, only if absent
#   /etc/kwollect/metrics.d/                       empty: put the metric files here
#   /var/lib/kwollect/                             the spool's directory, mode 0700
#   /usr/local/lib/sysusers.d/kwollector.conf      records the kwollector system user
# and creates the kwollector user. Running it again changes nothing but the binary and units
# (an upgrade): the config, metrics.d and the spool are kept.
#
# Usage: scripts/install.sh [BINARY]
#   DESTDIR=/tmp/stage scripts/install.sh dist/kwollector-aarch64-unknown-linux-gnu
# With DESTDIR the files go under DESTDIR (a staging tree, e.g. for a package): no user is
# created and nothing is chowned; the sysusers.d file records the user for the target.
# UNITDIR (default /etc/systemd/system) is where the units go, e.g. /lib/systemd/system.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINARY=${1:-$ROOT/dist/kwollector}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
USER_NAME=kwollector
STATE_DIR=/var/lib/kwollect
CONF_DIR=/etc/kwollect

case "$BINARY" in
  -h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then
  echo "install.sh: no executable kwollector binary at '$BINARY' (build it with 'deno task compile', or give its path)" >&2
  exit 2
fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or set DESTDIR to install into a staging tree)" >&2
  exit 2
fi

install -d -m 0755 "$DESTDIR/usr/local/bin" "$DESTDIR$UNITDIR" "$DESTDIR$CONF_DIR" "$DESTDIR$CONF_DIR/metrics.d" \
  "$DESTDIR/usr/local/lib/sysusers.d"
install -m 0755 "$BINARY" "$DESTDIR/usr/local/bin/kwollector"
install -m 0644 "$ROOT/config/kwollector.service" "$DESTDIR$UNITDIR/kwollector.service"
install -m 0644 "$ROOT/config/kwollector-wattmetre@.service" "$DESTDIR$UNITDIR/kwollector-wattmetre@.service"
printf 'u %s - "Kwollect edge collector" %s /usr/sbin/nologin\n' "$USER_NAME" "$STATE_DIR" \
  >"$DESTDIR/usr/local/lib/sysusers.d/kwollector.conf"
chmod 0644 "$DESTDIR/usr/local/lib/sysusers.d/kwollector.conf"
install -d -m 0700 "$DESTDIR$STATE_DIR"

config_written=no
if [ ! -e "$DESTDIR$CONF_DIR/kwollector.yaml" ]; then
  # Readable by the collector's group only: the file will hold the database password.
  install -m 0640 "$ROOT/config/kwollector.yaml" "$DESTDIR$CONF_DIR/kwollector.yaml"
  config_written=yes
fi

if [ -n "$DESTDIR" ]; then
  echo "Installed into $DESTDIR; the target must have the '$USER_NAME' user (usr/local/lib/sysusers.d/kwollector.conf)"
  echo "and $STATE_DIR owned by it"
  exit 0
fi

if ! getent passwd "$USER_NAME" >/dev/null; then
  useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
    --comment "Kwollect edge collector" "$USER_NAME"
  echo "Created system user $USER_NAME"
fi
chown "$USER_NAME:$USER_NAME" "$STATE_DIR"
if [ "$config_written" = yes ]; then
  chown "root:$USER_NAME" "$CONF_DIR/kwollector.yaml"
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

echo "kwollector $("$DESTDIR/usr/local/bin/kwollector" version 2>/dev/null || echo '(version unknown)') installed."
if [ "$config_written" = yes ]; then
  echo "Next: set db_host, db_password (and the rest) in $CONF_DIR/kwollector.yaml, add metric files to"
  echo "$CONF_DIR/metrics.d/, check them with 'kwollector check $CONF_DIR/kwollector.yaml --probe',"
  echo "then: systemctl enable --now kwollector"
else
  echo "Kept the existing $CONF_DIR/kwollector.yaml. Restart to use the new binary: systemctl restart kwollector"
fi
