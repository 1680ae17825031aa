#!/bin/bash
# The Debian package installed for real, in throwaway chroots: `make deb`,
# then in each suite's chroot (mmdebstrap, cached under .cache/deb-chroot/)
# `apt install ./the.deb`, what it built and installed, a kernel or headers
# arriving later, the refusals, then remove and purge and that nothing is
# left.  Booting a guest and loading the module is the image tier's job.
#   trixie:   6.12 (trixie) and 7.x (trixie-backports), both with headers
#   bookworm: 6.1, then bookworm-backports' 6.12 installed as an upgrade
#   tests/deb-chroot.sh [trixie] [bookworm]      (default: both)
# Every check prints what it saw; the last line is "N passed, N failed".
# Installs mmdebstrap (and what `make deb` needs) with apt if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/.cache/deb-chroot
LOG_TAG=deb-chroot
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"
SUITES=("$@")
[[ ${#SUITES[@]} -gt 0 ]] || SUITES=(trixie bookworm)
for s in "${SUITES[@]}"; do
    [[ $s == trixie || $s == bookworm ]] || die "unknown suite '$s' (valid: trixie bookworm)"
done
[[ $(id -u) == 0 ]] || die "needs root (chroot, mounts)"

PASS=0 FAIL=0
pass() { PASS=$((PASS + 1)); echo "ok: $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds; prints what
# COMMAND printed (what it saw) under the verdict.
check() {
    local what=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if [[ $rc == 0 ]]; then pass "$what"; else fail "$what"; fi
    [[ -z $out ]] || sed 's/^/      /' <<<"$out"
}

# The recipe of a suite's base chroot; the cached tarball's name carries its
# hash, so a changed recipe builds a new one.  MODULES=list keeps each
# initramfs to the modules that are asked for: fast to rebuild, and ours is
# in it only because the package asks.
base_recipe() {
    local suite=$1 mirror
    mirror=$(mirror_uri)
    echo --variant=apt
    echo --skip=cleanup/apt
    echo '--aptopt=APT::Install-Recommends "false"'
    echo '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list >"$1/etc/initramfs-tools/conf.d/modules-list.conf"'
    echo --include=dkms,gcc,make,initramfs-tools,kmod,zstd,linux-image-amd64,linux-headers-amd64
    if [[ $suite == trixie ]]; then
        # the 7.x kernel beside 6.12: backports' metapackages pull it in
        echo '--customize-hook=chroot "$1" apt-get -y -t trixie-backports install linux-image-amd64 linux-headers-amd64'
    else
        # the upgrade the test installs later, downloaded now (the test runs offline)
        echo '--customize-hook=chroot "$1" apt-get -y --download-only -t bookworm-backports install linux-image-amd64 linux-headers-amd64'
    fi
    echo "$suite"
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-backports main"
}

base_tar() {
    local suite=$1 recipe hash tar args
    recipe=$(base_recipe "$suite")
    hash=$(sha256sum <<<"$recipe" | cut -c1-12)
    tar=$CACHE/$suite-$hash.tar
    if [[ ! -f $tar ]]; then
        mapfile -t args <<<"$recipe"
        log "building the $suite base chroot (log: ${tar#"$ROOT"/}.log)" >&2
        rm -f "$CACHE/$suite"-*.tar "$CACHE/$suite"-*.tar.log
        mmdebstrap --format=tar "${args[@]:0:${#args[@]}-3}" "${args[-3]}" "$tar.tmp" "${args[@]: -2}" \
            >"$tar.log" 2>&1 || { tail -n 30 "$tar.log" >&2; die "mmdebstrap $suite failed"; }
        mv "$tar.tmp" "$tar"
    fi
    echo "$tar"
}

R=                               # the chroot of the suite under test
inr() { chroot "$R" /bin/sh -c "$1"; }
cleanup() {
    [[ -n $R && -d $R ]] || return 0
    umount "$R/proc" "$R/sys" "$R/dev/pts" 2>/dev/null || true
    # --one-file-system: never follow a mount that is still there
    rm -rf --one-file-system "$R"
}
trap cleanup EXIT

# A fresh chroot from the cached base.  Its /sys is an empty tmpfs, or one
# where the in-tree virtio_balloon is bound to virtio0 (bound=1).
new_chroot() {
    local suite=$1 bound=${2:-0} d tar
    cleanup
    tar=$(base_tar "$suite")
    R=$(mktemp -d "$CACHE/$suite-root.XXXXXX")
    tar -C "$R" -xf "$tar"
    mount -t proc proc "$R/proc"
    mount -t tmpfs sysfs "$R/sys"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
    if [[ $bound == 1 ]]; then
        d=$R/sys/devices/pci0000:00/0000:00:05.0/virtio0
        mkdir -p "$d" "$R/sys/bus/virtio/drivers/virtio_balloon"
        ln -s ../../../../devices/pci0000:00/0000:00:05.0/virtio0 \
            "$R/sys/bus/virtio/drivers/virtio_balloon/virtio0"
    fi
    cp "$DEB" "$R/tmp/"
}

apt_in() { inr "DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends $*"; }
indent() { sed 's/^/    | /'; }
# kernel versions in the chroot whose name starts with $1
kvers() { inr "ls /lib/modules" | grep "^$1" || true; }

# Predicates for check: each prints what it saw.
# re STRING: STRING as an extended regex matching itself (kernel versions
# have dots and pluses).
re() { sed 's/[]$*+?(){}|\\.^[]/\\&/g' <<<"$1"; }
# has TEXT PATTERN: TEXT has a line matching the extended regex PATTERN.
has() { grep -E -- "$2" <<<"$1" || { echo "no line matching: $2"; return 1; }; }
# lacks TEXT PATTERN
lacks() { ! grep -E -- "$2" <<<"$1" || { echo "(above: unexpected)"; return 1; }; }
dkms_state() { inr "dkms status -m virtio-balloon-hp" | grep . || echo "(dkms lists nothing)"; }
module_info() {
    local k=$1 ko out
    ko=$(inr "ls /lib/modules/$k/updates/dkms/virtio_balloon_hp.ko*") || return 1
    out=$(inr "modinfo $ko" | grep -E '^(filename|version|vermagic|alias):') || return 1
    echo "$out"
    has "$out" "^version: +$(re "$VER")\$" >/dev/null && has "$out" "^vermagic: +$(re "$k") " >/dev/null
}
# the virtio_balloon_hp files in kernel $1's initramfs (the module, its
# modprobe.d file, the init-premount script) and its list of modules
# loaded before the root file system (conf/modules)
initrd_view() {
    inr "d=\$(mktemp -d) && unmkinitramfs /boot/initrd.img-$1 \$d && cd \$d &&
         { [ -d main ] && cd main; true; } &&
         find . -name 'virtio_balloon_hp*' -o -name 'virtio-balloon-hp*' | sort &&
         { [ ! -f conf/modules ] || sed 's/^/conf\/modules: /' conf/modules; }; rm -rf \$d"
}
initrd_has() {
    local out
    out=$(initrd_view "$1") && echo "$out" &&
        has "$out" 'virtio_balloon_hp\.ko' >/dev/null &&
        has "$out" '^conf/modules: virtio_balloon_hp *$' >/dev/null &&
        has "$out" 'modprobe\.d/virtio_balloon_hp\.conf' >/dev/null &&
        has "$out" 'scripts/init-premount/virtio-balloon-hp$' >/dev/null
}
initrd_clean() {
    local out
    out=$(initrd_view "$1") && echo "${out:-(nothing of it)}" && lacks "$out" 'virtio[_-]balloon[_-]hp' >/dev/null
}
leftovers() {
    local out
    out=$(cd "$R" && ls -d lib/modules/*/updates/dkms/virtio_balloon_hp* usr/src/virtio-balloon-hp-* \
        var/lib/dkms/virtio-balloon-hp lib/modprobe.d/virtio_balloon_hp.conf \
        usr/share/initramfs-tools/modules.d/virtio-balloon-hp.conf \
        usr/share/initramfs-tools/scripts/init-premount/virtio-balloon-hp 2>/dev/null)
    echo "${out:-(none)}"
    [[ -z $out ]]
}
dkms_refuses() {   # dkms build ARGS...: exit 77 with the BUILD_EXCLUSIVE text
    local out rc=0
    out=$(inr "dkms build -m virtio-balloon-hp -v $VER $*" 2>&1) || rc=$?
    echo "$out"
    echo "exit $rc"
    [[ $rc == 77 ]] && has "$out" BUILD_EXCLUSIVE >/dev/null
}

# Package installed: built and installed for kernel $1, in its initramfs.
expect_installed() {
    local k=$1
    check "dkms: installed for $k" has "$(dkms_state)" "$(re "$k"), x86_64: installed"
    check "modinfo on $k's module: version $VER, vermagic $k" module_info "$k"
    check "$k's initramfs holds the module, its modprobe.d file and boot wait, and loads it early" initrd_has "$k"
}

# Package gone: nothing of it left anywhere, initramfs images included.
expect_gone() {
    local k
    check "dkms lists no virtio-balloon-hp" lacks "$(dkms_state)" virtio-balloon-hp
    check "no module, source, dkms tree, modprobe.d or initramfs-tools file left" leftovers
    for k in $(kvers ""); do
        check "$k's initramfs has nothing of it" initrd_clean "$k"
    done
}

test_trixie() {
    local k6 k7 out k
    new_chroot trixie 1
    k6=$(kvers 6.12.)
    k7=$(kvers 7.)
    check "kernels: 6.12 and 7.x, both with headers" has "$(inr "ls -d /lib/modules/*/build/include")" \
        "^/lib/modules/($(re "$k6")|$(re "$k7"))/build"
    check "7.x packaging: kernel in /usr/lib/modules/$k7/, from linux-binary/linux-modules" \
        has "$(ls "$R/usr/lib/modules/$k7/"; inr "dpkg -S /usr/lib/modules/$k7/vmlinuz /usr/lib/modules/$k7/kernel 2>&1")" 'linux-(binary|modules)'

    log "trixie: apt install ./$(basename "$DEB") (fake /sys: in-tree virtio_balloon bound to virtio0)"
    out=$(apt_in "install /tmp/$(basename "$DEB")" 2>&1) || { echo "$out"; fail "apt install"; return; }
    indent <<<"$out"
    for k in "$k6" "$k7"; do expect_installed "$k"; done
    check "modprobe reads the modprobe.d file" has "$(inr "modprobe -c" | grep virtio_balloon)" \
        '^(blacklist virtio_balloon|options virtio_balloon_hp page_order=9)$'
    check "postinst names the bound in-tree driver and what to do" has "$out" \
        'bound to virtio0|modprobe -r virtio_balloon && modprobe virtio_balloon_hp'
    check "refused: a non-x86_64 kernel" dkms_refuses -k "$k6" -a aarch64
    inr "mkdir -p /usr/src/linux-headers-0.0.0-novirtio/include /lib/modules/0.0.0-novirtio/kernel &&
         grep -v '^CONFIG_VIRTIO=' /lib/modules/$k6/build/.config >/usr/src/linux-headers-0.0.0-novirtio/.config &&
         ln -s /usr/src/linux-headers-0.0.0-novirtio /lib/modules/0.0.0-novirtio/build"
    check "refused: a kernel without CONFIG_VIRTIO" dkms_refuses -k 0.0.0-novirtio
    inr "rm -rf /usr/src/linux-headers-0.0.0-novirtio /lib/modules/0.0.0-novirtio"
    check "refusals left no trace" lacks "$(dkms_state)" 'aarch64|novirtio'

    log "trixie: apt remove, then apt purge"
    apt_in "remove virtio-balloon-hp-dkms" 2>&1 | indent
    expect_gone
    apt_in "purge virtio-balloon-hp-dkms" 2>&1 | indent
    check "purged: dpkg has no record of it" lacks "$(inr "dpkg -l virtio-balloon-hp-dkms" 2>&1)" '^(ii|rc) '
    expect_gone

    # A kernel without headers is named with its headers package and gets
    # nothing; installing the headers later builds it (header_postinst.d).
    log "trixie: without $k7's headers: apt install, then install the headers"
    apt_in "remove linux-headers-$k7 linux-headers-amd64" 2>&1 | tail -n 2 | indent
    out=$(apt_in "install /tmp/$(basename "$DEB")" 2>&1) || { echo "$out"; fail "apt install without 7.x headers"; return; }
    indent <<<"$out"
    check "postinst names the missing headers package" has "$out" "Install linux-headers-$(re "$k7");"
    check "nothing built or installed for $k7" lacks "$(dkms_state; ls "$R/lib/modules/$k7/updates/dkms/" 2>/dev/null)" \
        "$(re "$k7")|virtio_balloon_hp"
    expect_installed "$k6"
    out=$(apt_in "install --no-download linux-headers-$k7" 2>&1) || { echo "$out"; fail "installing linux-headers-$k7"; return; }
    grep -iE 'dkms|initramfs|virtio' <<<"$out" | indent
    expect_installed "$k7"

    log "trixie: apt purge"
    apt_in "purge virtio-balloon-hp-dkms" 2>&1 | indent
    expect_gone
}

test_bookworm() {
    local k1 k2 out
    new_chroot bookworm 0
    k1=$(kvers 6.1.)
    check "kernel: 6.1 with headers" has "$(inr "ls -d /lib/modules/*/build/include")" "^/lib/modules/$(re "${k1:-6.1.}")/build"
    log "bookworm: apt install ./$(basename "$DEB")"
    out=$(apt_in "install /tmp/$(basename "$DEB")" 2>&1) || { echo "$out"; fail "apt install"; return; }
    indent <<<"$out"
    expect_installed "$k1"
    check "no in-tree driver bound: postinst says nothing of it" lacks "$out" 'bound to'

    log "bookworm: kernel upgrade to bookworm-backports' 6.12"
    out=$(apt_in "install --no-download -t bookworm-backports linux-image-amd64 linux-headers-amd64" 2>&1) ||
        { echo "$out"; fail "kernel upgrade"; return; }
    grep -iE 'dkms|initramfs|virtio|Setting up linux-(image|headers)' <<<"$out" | indent
    k2=$(kvers 6.12.)
    check "the upgrade installed a 6.12 kernel" has "$k2" .
    [[ -z $k2 ]] || expect_installed "$k2"

    log "bookworm: apt purge"
    apt_in "purge virtio-balloon-hp-dkms" 2>&1 | indent
    expect_gone
}

START=$SECONDS
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -n 9 || die "another tests/deb-chroot.sh is running (lock: $CACHE/.lock)"
install_missing mmdebstrap
[[ " ${SUITES[*]} " != *" trixie "* ]] || ensure_trixie_keyring
DEB=$(make -s -C "$ROOT" deb | tail -n 1)
VER=$(dpkg-deb -f "$DEB" Version)
log "package: $DEB ($VER)"
for s in "${SUITES[@]}"; do
    t=$SECONDS
    base_tar "$s" >/dev/null
    log "$s: base chroot ready in $((SECONDS - t)) s"
    t=$SECONDS
    "test_$s"
    log "$s: tests took $((SECONDS - t)) s"
done
cleanup
R=
log "total $((SECONDS - START)) s"
echo "$PASS passed, $FAIL failed"
[[ $FAIL == 0 ]]
