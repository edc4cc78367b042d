#!/usr/bin/env bash
# The Debian packages as a hospital's server would meet them, never touching this machine's own
# system: cpack builds them (as `make package` does), dpkg-deb shows their metadata and files, the
# agent runs from a `dpkg -x` root, systemd-analyze verifies both units in that root, and dpkg
# installs, upgrades (an administrator's edit of /etc/fedda/site.yaml survives), removes and
# purges them in a throwaway root (dpkg --root, maintainer scripts run chrootless).
#
# Usage: package_test.sh BUILD_DIR   (the binaries must be built; FEDDA_KEEP_TEST_DIRS=1 keeps the work folder)
set -euo pipefail

build=$(cd "$1" && pwd)
work=$(mktemp -d /tmp/fedda-package-test.XXXXXX)
if [ -z "${FEDDA_KEEP_TEST_DIRS:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "kept $work" >&2; fi
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_in() {  # what text name
  grep -qF -- "$1" <<< "$2" || fail "$3 lacks '$1'"
}

version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
[ -n "$version" ] || { echo "no CPACK_PACKAGE_VERSION in $build/CPackConfig.cmake" >&2; exit 1; }

# ---- build: version 1, and version 1+upgrade (same files, a newer package version) -------------
(cd "$build" && cpack -G DEB -B "$work/v1" > "$work/cpack-v1.log" 2>&1) || { cat "$work/cpack-v1.log"; exit 1; }
(cd "$build" && cpack -G DEB -B "$work/v2" -D CPACK_PACKAGE_VERSION="$version+upgrade" > "$work/cpack-v2.log" 2>&1) ||
  { cat "$work/cpack-v2.log"; exit 1; }
agent="$work/v1/fedda-agent_${version}_amd64.deb"
coordinator="$work/v1/fedda-coordinator_${version}_amd64.deb"
admin="$work/v1/fedda-admin_${version}_amd64.deb"
agent_v2="$work/v2/fedda-agent_${version}+upgrade_amd64.deb"
for deb in "$agent" "$coordinator" "$admin" "$agent_v2"; do
  [ -f "$deb" ] || { echo "missing $deb; built: $(ls "$work"/v*/)" >&2; exit 1; }
done

# ---- metadata and contents -----------------------------------------------------------------
info=$(dpkg-deb --info "$agent")
expect_in "Package: fedda-agent" "$info" "agent control"
expect_in "Version: $version" "$info" "agent control"
expect_in "Architecture: amd64" "$info" "agent control"
expect_in "libtorch1.13" "$info" "agent Depends (dpkg-shlibdeps)"
expect_in "libzmq5" "$info" "agent Depends (dpkg-shlibdeps)"
expect_in "conffiles" "$info" "agent control files"
expect_in "postinst" "$info" "agent control files"
[ "$(dpkg-deb --ctrl-tarfile "$agent" | tar -xO ./conffiles)" = "/etc/fedda/site.yaml" ] || fail "agent conffiles is not /etc/fedda/site.yaml"
contents=$(dpkg-deb --contents "$agent")
for f in ./usr/bin/fedda-agent ./usr/lib/systemd/system/fedda-agent.service ./etc/fedda/site.yaml \
         ./usr/share/doc/fedda-agent/README.md; do
  expect_in "$f" "$contents" "agent contents"
done
info=$(dpkg-deb --info "$coordinator")
expect_in "Package: fedda-coordinator" "$info" "coordinator control"
expect_in "libzmq5" "$info" "coordinator Depends"
expect_in "libcpp-httplib" "$info" "coordinator Depends"
if grep -q "libITK\|libinsighttoolkit" <<< "$info"; then fail "coordinator depends on ITK"; fi
contents=$(dpkg-deb --contents "$coordinator")
for f in ./usr/bin/fedda-coordinator ./usr/lib/systemd/system/fedda-coordinator.service ./etc/default/fedda-coordinator; do
  expect_in "$f" "$contents" "coordinator contents"
done
expect_in "./usr/bin/fedda-admin" "$(dpkg-deb --contents "$admin")" "admin contents"

# ---- the agent runs from an extracted package ------------------------------------------------
x="$work/extracted"
dpkg -x "$agent" "$x"
dpkg -x "$coordinator" "$x"
dpkg -x "$admin" "$x"
out=$("$x/usr/bin/fedda-agent" --version)
[ "$out" = "fedda-agent $version" ] || fail "fedda-agent --version printed '$out'"
out=$("$x/usr/bin/fedda-coordinator" --version)
[ "$out" = "fedda-coordinator $version" ] || fail "fedda-coordinator --version printed '$out'"
out=$("$x/usr/bin/fedda-admin" --version)
[ "$out" = "fedda-admin $version" ] || fail "fedda-admin --version printed '$out'"
"$build/bin/fedda-sim" --log-level warn generate --profile smoke --clinics amsterdam --subjects 2 --threads 1 --out "$work/data"
sed -e "s|^data: .*|data: $work/data/amsterdam|" -e "s|^cache_dir: .*|cache_dir: $work/cache|" \
    -e "/^kit:/d" -e "/^root_fingerprint:/d" "$x/etc/fedda/site.yaml" > "$work/site.yaml"
if ! out=$("$x/usr/bin/fedda-agent" check --config "$work/site.yaml" 2>&1); then
  fail "fedda-agent check from the package failed: $out"
fi
expect_in "2 of 2 subjects usable" "$out" "fedda-agent check"

# ---- both units verify (systemd-analyze in the extracted root) ---------------------------------
mkdir -p "$x/etc/systemd/system"
cp -an /usr/lib/systemd/system/. "$x/usr/lib/systemd/system/"  # the targets the units name
for unit in fedda-agent.service fedda-coordinator.service; do
  if ! out=$(systemd-analyze verify --root="$x" "/usr/lib/systemd/system/$unit" 2>&1); then
    fail "systemd-analyze verify $unit: $out"
  fi
  for key in ProtectSystem=strict NoNewPrivileges=true User=fedda; do
    grep -qx "$key" "$x/usr/lib/systemd/system/$unit" || fail "$unit lacks $key"
  done
done
# A GPU site's drop-in (share/doc/fedda-agent/examples) verifies with the unit and opens the device nodes.
dropin="$x/usr/share/doc/fedda-agent/examples/fedda-agent-gpu.conf"
[ -f "$dropin" ] || fail "the agent package lacks examples/fedda-agent-gpu.conf"
mkdir -p "$x/etc/systemd/system/fedda-agent.service.d"
cp "$dropin" "$x/etc/systemd/system/fedda-agent.service.d/gpu.conf"
# (an unknown key is only a warning to systemd-analyze: any output fails)
if ! out=$(systemd-analyze verify --root="$x" /usr/lib/systemd/system/fedda-agent.service 2>&1) || [ -n "$out" ]; then
  fail "systemd-analyze verify fedda-agent.service with the GPU drop-in: $out"
fi
grep -qx "PrivateDevices=false" "$dropin" || fail "the GPU drop-in leaves the devices private"
rm -r "$x/etc/systemd/system/fedda-agent.service.d"
# The check can fail: a unit whose binary is missing does not verify.
sed 's|/usr/bin/fedda-agent |/usr/bin/fedda-nowhere |' "$x/usr/lib/systemd/system/fedda-agent.service" \
  > "$x/usr/lib/systemd/system/fedda-broken.service"
if systemd-analyze verify --root="$x" /usr/lib/systemd/system/fedda-broken.service > /dev/null 2>&1; then
  fail "systemd-analyze verify passed a unit whose binary does not exist"
fi

# ---- install, edit, upgrade, remove, purge in a throwaway root ---------------------------------
root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status"
dpkg_root() {
  dpkg --root="$root" --force-not-root --force-depends --force-script-chrootless --force-unsafe-io \
       --log="$work/dpkg.log" "$@" < /dev/null
}
dpkg_root -i "$agent" > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i fedda-agent"; }
[ -x "$root/usr/bin/fedda-agent" ] || fail "fedda-agent not installed"
[ -d "$root/var/lib/fedda" ] || fail "postinst did not make /var/lib/fedda"
[ "$(stat -c %a "$root/var/lib/fedda")" = 750 ] || fail "/var/lib/fedda is not 0750"
echo "# edited by the site administrator" >> "$root/etc/fedda/site.yaml"
dpkg_root -i "$agent_v2" > "$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "dpkg -i (upgrade)"; }
installed=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' fedda-agent)
[ "$installed" = "$version+upgrade" ] || fail "after the upgrade dpkg knows version '$installed'"
tail -1 "$root/etc/fedda/site.yaml" | grep -q "edited by the site administrator" || fail "the upgrade lost the edit of site.yaml"
dpkg_root -r fedda-agent > "$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/fedda-agent" ] || fail "dpkg -r left the binary"
grep -q "edited by the site administrator" "$root/etc/fedda/site.yaml" || fail "dpkg -r removed the edited conffile"
dpkg_root -P fedda-agent > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg -P"; }
[ ! -e "$root/etc/fedda/site.yaml" ] || fail "dpkg -P left /etc/fedda/site.yaml"
dpkg_root -i "$coordinator" > "$work/install-coordinator.log" 2>&1 ||
  { cat "$work/install-coordinator.log"; fail "dpkg -i fedda-coordinator"; }
[ -f "$root/etc/default/fedda-coordinator" ] || fail "fedda-coordinator's defaults file not installed"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "packages: fedda-agent, fedda-coordinator, fedda-admin $version: metadata, contents, extracted run, units, install/upgrade/remove/purge all as expected"
