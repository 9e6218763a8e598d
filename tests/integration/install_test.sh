#!/bin/sh
# cmake --install into scratch DESTDIRs, for several prefixes: everything
# lands under the prefix (the config under GNUInstallDirs' SYSCONFDIR, which
# is /etc for the prefix /usr), the installed unit starts the installed
# binary with the installed config, the installed daemon runs, and a
# re-install keeps an edited config.
#   install_test.sh BUILD_DIR
set -eu
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
fail() { echo "FAIL ($prefix): $*"; exit 1; }

# check PREFIX ETC: install with --prefix PREFIX into a fresh DESTDIR;
# ETC is where the config is expected.
check() {
  prefix=$1
  etc=$2
  rm -rf "$dest" && mkdir -p "$dest"
  DESTDIR="$dest" cmake --install "$build" --prefix "$prefix" >/dev/null
  for f in bin/voxdbd bin/voxdb; do
    test -x "$dest$prefix/$f" || fail "missing $prefix/$f"
  done
  for f in share/doc/voxdb/README.md share/doc/voxdb/voxdb.conf.example \
           share/doc/voxdb/protocol/PROTOCOL.md share/doc/voxdb/engine/FORMAT.md \
           share/doc/voxdb/docs/DESIGN.md share/doc/voxdb/docs/BENCHMARKS.md \
           lib/systemd/system/voxdbd.service; do
    test -f "$dest$prefix/$f" || fail "missing $prefix/$f"
  done
  test -f "$dest$etc/voxdb/voxdb.conf" || fail "missing $etc/voxdb/voxdb.conf"
  # Nothing else anywhere: every file is under the prefix or is the config.
  outside=$(cd "$dest" && find . -type f | sed 's|^\.||' |
            grep -v -e "^$prefix/" -e "^$etc/voxdb/voxdb.conf\$" || true)
  test -z "$outside" || fail "installed outside the prefix: $outside"
  # The unit starts what was installed, with the config that was installed.
  unit="$dest$prefix/lib/systemd/system/voxdbd.service"
  grep -qx "ExecStart=$prefix/bin/voxdbd --config $etc/voxdb/voxdb.conf --data /var/lib/voxdb" \
    "$unit" || fail "the unit runs something else: $(grep ExecStart "$unit")"
  grep -qx "Documentation=file://$prefix/share/doc/voxdb/README.md" "$unit" ||
    fail "the unit documents something else: $(grep Documentation "$unit")"
  "$dest$prefix/bin/voxdbd" --version | grep -q '^voxdbd ' || fail "voxdbd --version"
  "$dest$prefix/bin/voxdb" --help >/dev/null || fail "voxdb --help"

  # The admin edits the config (a token); a re-install keeps it, and still
  # puts the new default next to the docs.
  conf="$dest$etc/voxdb/voxdb.conf"
  echo "token = s3cret-admin-token:admin" >> "$conf"
  cp "$conf" "$dest/edited"
  rm "$dest$prefix/share/doc/voxdb/voxdb.conf.example"
  DESTDIR="$dest" cmake --install "$build" --prefix "$prefix" >/dev/null
  cmp -s "$conf" "$dest/edited" || fail "the re-install overwrote the edited config"
  test -f "$dest$prefix/share/doc/voxdb/voxdb.conf.example" || fail "no voxdb.conf.example"
  rm "$dest/edited"
}

check /usr/local /usr/local/etc   # the default, which systemd/voxdbd.service names
check /srv/voxdb /srv/voxdb/etc
check /usr /etc                   # GNUInstallDirs: SYSCONFDIR of /usr is /etc
# The unit in the source tree names the default prefix's paths.
grep -qx 'ExecStart=/usr/local/bin/voxdbd --config /usr/local/etc/voxdb/voxdb.conf --data /var/lib/voxdb' \
  "$(dirname "$0")/../../systemd/voxdbd.service" || { echo "FAIL: systemd/voxdbd.service"; exit 1; }
echo "install layout ok"
