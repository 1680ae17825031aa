#!/bin/bash
# Install and cache everything the tests need; safe to run again (skips done work).
#   VBHP_KERNELS="6.1 6.12 6.12-cloud 7.3"   guest kernels to fetch (default: all)
# 6.1 is Debian 12's, through the host's apt; 6.12 (generic and -cloud) is
# Debian 13's and 7.3 trixie-backports', through the apt of a trixie chroot
# (.cache/trixie-root, see trixie-lib.sh), which also builds the module for them.
# Results: .cache/kernels/<kver>/ (image + headers extracted, never installed),
# .cache/kernels.list ("<short> <kver> <headers dir>"), .cache/linux-src-6.1/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$ROOT/.cache
ALL_KERNELS="6.1 6.12 6.12-cloud 7.3"
KERNELS=${VBHP_KERNELS:-$ALL_KERNELS}
PACKAGES=(qemu-system-x86 busybox-static gcc make libc6-dev python3 cpio
          xz-utils zstd            # compressed modules (.ko.xz, .ko.zst)
          kmod sparse bc linux-source-6.1
          libelf1 libssl3 pahole   # needed by the kernels' kbuild tools
          mmdebstrap               # the trixie chroot
          rsync                    # lib.mk's install rule (kselftest_kernel_runner)
          gnuplot-nox)             # make bench's plot
START=$SECONDS
LOG_TAG=setup
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"
# shellcheck source=tests/setup/trixie-lib.sh
source "$ROOT/tests/setup/trixie-lib.sh"

# What tests use of Debian's 6.1 source: checkpatch (make lint), the
# kselftest headers (the selftests' build against the kernel's own
# kselftest.h) and the kselftest framework: lib.mk, the top-level Makefile's
# install rule and run_kselftest.sh (kselftest_kernel_runner).
LINUX_SRC_FILES=(
    tools/testing/selftests/kselftest.h
    tools/testing/selftests/kselftest_harness.h
    tools/testing/selftests/Makefile
    tools/testing/selftests/lib.mk
    tools/testing/selftests/run_kselftest.sh
    tools/testing/selftests/kselftest
    scripts/subarch.include
    scripts/checkpatch.pl
    scripts/spelling.txt
    scripts/const_structs.checkpatch
)

extract_linux_source() {
    local dst=$CACHE/linux-src-6.1 tarball=(/usr/src/linux-source-6.1.tar.*)
    [[ -f $dst/.done && $(<"$dst/.done") == "${LINUX_SRC_FILES[*]}" ]] &&
        { log "linux-src-6.1 already extracted"; return; }
    log "extracting checkpatch and the kselftest framework from ${tarball[0]}"
    rm -rf "$dst" && mkdir -p "$dst"
    tar -xf "${tarball[0]}" -C "$dst" --strip-components=1 \
        "${LINUX_SRC_FILES[@]/#/linux-source-6.1/}"
    echo "${LINUX_SRC_FILES[*]}" >"$dst/.done"
}

# Where a kernel comes from: "<apt: host|trixie> <target suite|-> <headers metapackage>".
kernel_source() {
    case $1 in
    6.1) echo "host - linux-headers-amd64" ;;        # bookworm, incl. security updates
    6.12) echo "trixie - linux-headers-amd64" ;;     # trixie, incl. security updates
    6.12-cloud) echo "trixie - linux-headers-cloud-amd64" ;;
    7.3) echo "trixie trixie-backports linux-headers-amd64" ;;
    *) return 1 ;;
    esac
}

# apt-cache of the host or of the trixie chroot
kernel_apt_cache() {
    if [[ $1 == host ]]; then apt-cache "${@:2}"; else chroot "$TRIXIE" apt-cache "${@:2}"; fi
}

# ABI name (e.g. 7.3.4+deb13-amd64) the kernel's headers metapackage points to.
resolve_kver() {
    local short=$1 apt target meta opts=()
    read -r apt target meta < <(kernel_source "$short")
    [[ $target == - ]] || opts=(-t "$target")
    kernel_apt_cache "$apt" "${opts[@]}" depends "$meta" 2>/dev/null |
        sed -n 's/^ *Depends: linux-headers-\(.*-amd64\)$/\1/p' |
        awk -v p="${short%-cloud}." 'index($0, p) == 1 { print; exit }'
}

# Download the packages of one kernel and extract them all into
# .cache/kernels/<kver>/: the image (on 7.x a metapackage over linux-binary,
# linux-modules and linux-base), the headers, their -common part and kbuild
# tools.  They are extracted rather than installed because Debian's headers
# packages depend on the image package.
fetch_kernel() {
    local short=$1 kver=$2 root=$CACHE/kernels/$2 debs=$CACHE/debs apt pkgs p
    read -r apt _ < <(kernel_source "$short")
    mapfile -t pkgs < <(kernel_apt_cache "$apt" depends "linux-image-$kver" "linux-headers-$kver" |
        awk -v k="$kver" '$1 == "Depends:" && ($2 ~ /^linux-headers-.*-common$/ || $2 ~ /^linux-kbuild-/ ||
            $2 == "linux-binary-" k || $2 == "linux-modules-" k || $2 == "linux-base-" k) { print $2 }' |
        sort -u)
    pkgs=("linux-image-$kver" "linux-headers-$kver" "${pkgs[@]}")
    log "downloading ${pkgs[*]}"
    mkdir -p "$debs"
    for p in "${pkgs[@]}"; do rm -f "$debs/${p}_"*.deb; done
    if [[ $apt == host ]]; then
        (cd "$debs" && "${APT[@]}" -o APT::Sandbox::User=root download "${pkgs[@]}")
    else
        # shellcheck disable=SC2016  # expanded by the inner shell
        trixie_run "$debs" -- sh -c 'cd "$1" && shift && "$@"' _ "$debs" \
            "${APT[@]}" -o APT::Sandbox::User=root download "${pkgs[@]}"
    fi
    rm -rf "$root" && mkdir -p "$root"
    for p in "${pkgs[@]}"; do
        log "extracting $p into ${root#"$ROOT"/}"
        dpkg-deb -x "$debs/${p}_"*.deb "$root"
    done
    [[ -d $root/usr/src/linux-headers-$kver ]] || die "no headers in linux-headers-$kver"
    # The headers Makefile names the -common tree (and on 7.x itself, as
    # KBUILD_OUTPUT) by absolute path.
    sed -i -E "s@^(include |KBUILD_OUTPUT=)/usr/src/@\1$root/usr/src/@" \
        "$root/usr/src/linux-headers-$kver/Makefile"
    touch "$root/.done"
}

# Refresh the package lists of the apt a kernel comes from (once per run).
kernel_apt_update() {
    if [[ $1 == host ]]; then apt_update_once; else trixie_apt_update_once; fi
}

for short in $KERNELS; do
    kernel_source "$short" >/dev/null || die "unknown kernel '$short' in VBHP_KERNELS: valid are $ALL_KERNELS"
done
mkdir -p "$CACHE"
install_missing "${PACKAGES[@]}"
extract_linux_source
for short in $KERNELS; do
    read -r apt _ < <(kernel_source "$short")
    [[ $apt == host ]] || { trixie_ensure; break; }
done

LIST=$CACHE/kernels.list
touch "$LIST"
summary=()
for short in $KERNELS; do
    read -r apt _ < <(kernel_source "$short")
    kver=$(resolve_kver "$short")
    [[ -n $kver ]] || { kernel_apt_update "$apt"; kver=$(resolve_kver "$short"); }
    [[ -n $kver ]] || die "cannot resolve the $short kernel ABI name"
    if [[ ! -f $CACHE/kernels/$kver/.done ]]; then
        kernel_apt_update "$apt"  # fresh lists, then resolve again: the newest ABI may have changed
        kver=$(resolve_kver "$short")
        [[ -f $CACHE/kernels/$kver/.done ]] || fetch_kernel "$short" "$kver"
    else
        log "kernel $kver already extracted"
    fi
    # replace this kernel's line in the list, keep the others (under a lock
    # that debug-kernel.sh takes too)
    (
        flock 9
        { grep -v "^$short " "$LIST" || true
          echo "$short $kver $CACHE/kernels/$kver/usr/src/linux-headers-$kver"; } | sort -V >"$LIST.new"
        mv "$LIST.new" "$LIST"
    ) 9>"$LIST.lock"
    summary+=("$short=$kver")
done
log "done in $((SECONDS - START)) s: ${summary[*]}; list in ${LIST#"$ROOT"/}"
