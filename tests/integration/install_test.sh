#!/bin/sh
# cmake --install into a scratch DESTDIR: the binaries, the config file and
# the unit land where systemd/voxdbd.service and the README expect them, and
# the installed daemon runs.
set -eu
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
DESTDIR="$dest" cmake --install "$build" --prefix /usr/local >/dev/null
for f in usr/local/bin/voxdbd usr/local/bin/voxdb; do
  test -x "$dest/$f" || { echo "missing $f"; exit 1; }
done
for f in etc/voxdb/voxdb.conf etc/systemd/system/voxdbd.service \
         usr/local/share/doc/voxdb/README.md; do
  test -f "$dest/$f" || { echo "missing $f"; exit 1; }
done
# The unit starts what was installed, with the config that was installed.
grep -q '^ExecStart=/usr/local/bin/voxdbd --config /etc/voxdb/voxdb.conf' \
  "$dest/etc/systemd/system/voxdbd.service" || { echo "the unit runs something else"; exit 1; }
"$dest/usr/local/bin/voxdbd" --version | grep -q '^voxdbd '
"$dest/usr/local/bin/voxdb" --help >/dev/null
echo "install layout ok"
