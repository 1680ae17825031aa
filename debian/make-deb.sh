#!/bin/bash
# `make deb`: build the virtio-balloon-hp-dkms package with Debian's own
# tools (dpkg-buildpackage, debhelper, dh-dkms) in a copy of the sources
# under .cache/deb/, so that nothing lands in the checkout.  Installs what
# it lacks of dpkg-dev, make and debian/control's Build-Depends with apt.
# The version is dkms.conf's PACKAGE_VERSION; debian/changelog is written
# from it into the copy.  The last line printed is the path of the .deb.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/.cache/deb
LOG_TAG=deb
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"
START=$SECONDS

# dkms.conf is a shell fragment: read it the way dkms does.
ver=$(cd "$ROOT" && kernelver='' bash -c '. ./dkms.conf && echo "$PACKAGE_VERSION"')
[[ $ver =~ ^[0-9][0-9A-Za-z.+~]*$ ]] ||
    die "dkms.conf: PACKAGE_VERSION \"$ver\" is not a Debian upstream version (digits first, then [0-9A-Za-z.+~])"

install_missing dpkg-dev make
if ! unmet=$(cd "$ROOT" && dpkg-checkbuilddeps 2>&1); then
    log "missing build dependencies: ${unmet##*: }"
    apt_update_once
    log "apt-get build-dep $ROOT (debian/control's Build-Depends)"
    "${APT[@]}" build-dep --no-install-recommends "$ROOT"
fi

# A copy of the tracked and new (not ignored) files of the working tree.
src=$OUT/virtio-balloon-hp-$ver
rm -rf "$OUT" && mkdir -p "$src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    tar --null -T - -cf -) | tar -C "$src" -xf -

maint=$(sed -n 's/^Maintainer: //p' "$ROOT/debian/control")
when=$(git -C "$ROOT" log -1 --format=%aD 2>/dev/null || date -R)
what=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "a source tree outside git")
cat >"$src/debian/changelog" <<CHANGELOG
virtio-balloon-hp ($ver) unstable; urgency=medium

  * Built by make deb from $what.

 -- $maint  $when
CHANGELOG

log "dpkg-buildpackage in ${src#"$ROOT"/} (log: ${OUT#"$ROOT"/}/build.log)"
(cd "$src" && dpkg-buildpackage -b -us -uc) >"$OUT/build.log" 2>&1 ||
    { tail -n 40 "$OUT/build.log" >&2; die "dpkg-buildpackage failed (whole log: $OUT/build.log)"; }
deb=$OUT/virtio-balloon-hp-dkms_${ver}_all.deb
[[ -f $deb ]] || die "dpkg-buildpackage made no $(basename "$deb")"
log "built in $((SECONDS - START)) s; contents:"
dpkg-deb -c "$deb" | awk '{print "  " $6}'
echo "$deb"
