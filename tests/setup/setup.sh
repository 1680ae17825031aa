#!/bin/bash
# Install and cache everything the tests need; safe to run again (skips done work).
#   VBHP_KERNELS="6.1 6.12"   guest kernels to fetch (default: both)
# Results: .cache/kernels/<kver>/ (image + headers extracted, never installed),
# .cache/kernels.list ("<short> <kver> <headers dir>"), .cache/linux-src-6.1/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$ROOT/.cache
KERNELS=${VBHP_KERNELS:-6.1 6.12}
BPO_SOURCES=/etc/apt/sources.list.d/virtio-balloon-hp-backports.sources
PACKAGES=(qemu-system-x86 busybox-static gcc make libc6-dev python3 cpio xz-utils
          kmod sparse bc linux-source-6.1
          libelf1 libssl3 pahole   # needed by the kernels' kbuild tools
          gnuplot-nox)             # make bench's plot
START=$SECONDS
LOG_TAG=setup
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"

ensure_backports() {
    local want
    want="Types: deb
URIs: $(mirror_uri)
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    [[ -f $BPO_SOURCES && $(<"$BPO_SOURCES") == "$want" ]] && return
    log "writing $BPO_SOURCES"
    echo "$want" >"$BPO_SOURCES"
    apt_update_once  # the new suite's lists are needed to resolve 6.12
}

extract_linux_source() {
    local dst=$CACHE/linux-src-6.1 tarball=(/usr/src/linux-source-6.1.tar.*)
    [[ -f $dst/.done ]] && { log "linux-src-6.1 already extracted"; return; }
    log "extracting kselftest headers and checkpatch from ${tarball[0]}"
    rm -rf "$dst" && mkdir -p "$dst"
    tar -xf "${tarball[0]}" -C "$dst" --strip-components=1 \
        linux-source-6.1/tools/testing/selftests/kselftest.h \
        linux-source-6.1/tools/testing/selftests/kselftest_harness.h \
        linux-source-6.1/scripts/checkpatch.pl \
        linux-source-6.1/scripts/spelling.txt \
        linux-source-6.1/scripts/const_structs.checkpatch
    touch "$dst/.done"
}

# ABI name (e.g. 6.1.0-35-amd64) the linux-headers-amd64 metapackage points to:
# 6.1 from bookworm (incl. security updates), 6.12 from bookworm-backports.
resolve_kver() {
    local short=$1 target=()
    [[ $short == 6.1 ]] || target=(-t bookworm-backports)
    apt-cache "${target[@]}" depends linux-headers-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-headers-\(.*-amd64\)$/\1/p' | grep -m1 "^$short\." || true
}

# Download the image and headers .debs of one kernel and extract them all into
# .cache/kernels/<kver>/. The headers are extracted rather than installed because
# Debian's 6.12 headers package depends on the image package.
fetch_kernel() {
    local kver=$1 root=$CACHE/kernels/$1 debs=$CACHE/debs deps pkgs
    # the headers' -common part and kbuild tools (names differ between 6.1 and 6.12)
    mapfile -t deps < <(apt-cache depends "linux-headers-$kver" |
        sed -n 's/^ *Depends: \(linux-headers-.*-common\|linux-kbuild-.*\)$/\1/p')
    pkgs=("linux-image-$kver" "linux-headers-$kver" "${deps[@]}")
    log "downloading ${pkgs[*]}"
    mkdir -p "$debs"
    for p in "${pkgs[@]}"; do rm -f "$debs/${p}_"*.deb; done
    (cd "$debs" && "${APT[@]}" -o APT::Sandbox::User=root download "${pkgs[@]}")
    rm -rf "$root" && mkdir -p "$root"
    for p in "${pkgs[@]}"; do
        log "extracting $p into ${root#"$ROOT"/}"
        dpkg-deb -x "$debs/${p}_"*.deb "$root"
    done
    # The headers Makefile includes the -common tree by absolute path.
    sed -i "s|^include /usr/src/|include $root/usr/src/|" "$root/usr/src/linux-headers-$kver/Makefile"
    touch "$root/.done"
}

mkdir -p "$CACHE"
if [[ " $KERNELS " == *" 6.12 "* ]]; then ensure_backports; fi
install_missing "${PACKAGES[@]}"
extract_linux_source

LIST=$CACHE/kernels.list
touch "$LIST"
summary=()
for short in $KERNELS; do
    kver=$(resolve_kver "$short")
    [[ -n $kver ]] || { apt_update_once; kver=$(resolve_kver "$short"); }
    [[ -n $kver ]] || die "cannot resolve the $short kernel ABI name"
    if [[ ! -f $CACHE/kernels/$kver/.done ]]; then
        apt_update_once   # fresh lists, then resolve again: the newest ABI may have changed
        kver=$(resolve_kver "$short")
        [[ -f $CACHE/kernels/$kver/.done ]] || fetch_kernel "$kver"
    else
        log "kernel $kver already extracted"
    fi
    # replace this kernel's line in the list, keep the others
    { grep -v "^$short " "$LIST" || true
      echo "$short $kver $CACHE/kernels/$kver/usr/src/linux-headers-$kver"; } | sort -V >"$LIST.new"
    mv "$LIST.new" "$LIST"
    summary+=("$short=$kver")
done
log "done in $((SECONDS - START)) s: ${summary[*]}; list in ${LIST#"$ROOT"/}"
