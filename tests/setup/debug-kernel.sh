#!/bin/bash
# Build a debug guest kernel of `make check-debug` from Debian's kernel
# source, trixie's linux-source-6.12 or trixie-backports' linux-source-7.3
# (downloaded through the trixie chroot's apt): allnoconfig plus
# tests/setup/debug-kernel.config (KASAN, lockdep, DEBUG_VM, DEBUG_PAGEALLOC,
# kmemleak, debugobjects, fault injection), merged by the kernel's own
# scripts/kconfig/merge_config.sh.  Built with the host's gcc, so build.sh
# builds the module for it on the host too.
#   tests/setup/debug-kernel.sh [6.12|7.3]
#   tests/setup/debug-kernel.sh --tools   only install the build tools (the
#                 machine's apt), so that a build can then run in the
#                 background beside other apt users (.ci/run)
# The build is cached under .cache/debug-kernel/build-<base>-<key>/, keyed
# by the resulting .config (configuring takes seconds), the source package
# version and the compiler: it is rebuilt only when one of them changes.
# Result: the image and modules in .cache/kernels/<kver>/, laid out as
# setup.sh lays out Debian's, and the line "<base>-debug <kver> <build dir>"
# in .cache/kernels.list.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$ROOT/.cache
DIR=$CACHE/debug-kernel
FRAGMENT=$ROOT/tests/setup/debug-kernel.config
BUILD_DEPS=(gcc make libc6-dev bc flex bison libelf-dev libssl-dev xz-utils kmod mmdebstrap)
START=$SECONDS
LOG_TAG=debug-kernel
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"
# shellcheck source=tests/setup/trixie-lib.sh
source "$ROOT/tests/setup/trixie-lib.sh"

if [[ ${1:-} == --tools ]]; then
    install_missing "${BUILD_DEPS[@]}"
    exit 0
fi
base=${1:-6.12}
case $base in
6.12) pkg=linux-source-6.12 ;;      # trixie (and its security updates)
7.3) pkg=linux-source-7.3 ;;        # trixie-backports
*) die "no debug build of '$base': valid are 6.12 and 7.3" ;;
esac

# Candidate version of the source package in the trixie chroot's apt.
source_version() {
    chroot "$TRIXIE" apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

# Download the source package and unpack its tarball into $1.
fetch_source() {
    local src=$1 debs=$CACHE/debs tmp
    mkdir -p "$debs"
    rm -f "$debs/${pkg}_"*.deb
    log "downloading $pkg $version"
    # shellcheck disable=SC2016  # expanded by the inner shell
    trixie_run "$debs" -- sh -c 'cd "$1" && shift && "$@"' _ "$debs" \
        "${APT[@]}" -o APT::Sandbox::User=root download "$pkg=$version"
    tmp=$(mktemp -d "$DIR/unpack.XXXXXX")
    dpkg-deb --fsys-tarfile "$debs/${pkg}_"*.deb | tar -x -C "$tmp" "./usr/src/$pkg.tar.xz"
    rm -rf "$src.new" && mkdir -p "$src.new"
    log "unpacking $pkg.tar.xz"
    tar -xf "$tmp/usr/src/$pkg.tar.xz" -C "$src.new" --strip-components=1
    rm -rf "$tmp" "$debs/${pkg}_"*.deb
    touch "$src.new/.done"
    rm -rf "$src" && mv "$src.new" "$src"
}

# Configure $2 (output dir) from source $1: every line of the fragment must
# hold in the final .config, or the build is refused (merge_config.sh only
# warns when Kconfig drops a value).  The exception is an option this
# source does not define: the fragment names both the 6.x and the 7.x name
# of the balloon's migration option (BALLOON_COMPACTION, BALLOON_MIGRATION).
configure() {
    local src=$1 out=$2 log=$2/config.log sym bad=0
    (cd "$src" && scripts/kconfig/merge_config.sh -n -O "$out" "$FRAGMENT") >"$log" 2>&1 ||
        { cat "$log" >&2; die "merge_config.sh failed"; }
    while read -r sym; do
        if grep -rqE "^(menu)?config $sym\$" "$src" --include='Kconfig*'; then
            grep -A2 "Value requested for CONFIG_$sym " "$log" >&2
            bad=1
        else
            log "CONFIG_$sym: not an option of this source, skipped"
        fi
    done < <(sed -n 's/^\(WARNING: \)\?Value requested for CONFIG_\([A-Z0-9_]*\) not in final .config$/\2/p' "$log")
    ((bad == 0)) || die "the values above from ${FRAGMENT#"$ROOT"/} did not take effect"
}

# Build in $2 and install the image and modules into .cache/kernels/<kver>/.
build() {
    local src=$1 out=$2 kver root jobs=$(($(nproc) + 1))
    log "building (make -j$jobs bzImage modules; about 8 min on 2 cores)"
    make -C "$src" O="$out" -j"$jobs" bzImage modules >"$out/build.log" 2>&1 ||
        { tail -n 40 "$out/build.log" >&2; die "kernel build failed: ${out#"$ROOT"/}/build.log"; }
    kver=$(make -s -C "$src" O="$out" kernelrelease)
    root=$CACHE/kernels/$kver
    rm -rf "$root" && mkdir -p "$root/boot"
    cp "$out/arch/x86/boot/bzImage" "$root/boot/vmlinuz-$kver"
    make -C "$src" O="$out" INSTALL_MOD_PATH="$root" modules_install >>"$out/build.log" 2>&1 ||
        die "modules_install failed: ${out#"$ROOT"/}/build.log"
    echo "$kver" >"$out/.done"
}

install_missing "${BUILD_DEPS[@]}"
trixie_ensure
version=$(source_version)
[[ -n $version ]] || { trixie_apt_update_once; version=$(source_version); }
[[ -n $version ]] || die "no $pkg in the trixie chroot's apt"
src=$DIR/$pkg-$version conf=$DIR/config-$base
mkdir -p "$DIR"
if [[ ! -f $src/.done ]]; then
    # fresh lists first: the mirror may have dropped the version old ones name
    trixie_apt_update_once
    version=$(source_version) src=$DIR/$pkg-$version
    [[ -f $src/.done ]] || fetch_source "$src"
fi
rm -rf "$conf" && mkdir -p "$conf"
configure "$src" "$conf"
key=$( { cat "$conf/.config"; echo "$pkg $version"; gcc --version | head -n 1; } |
    sha256sum | cut -c1-12)
out=$DIR/build-$base-$key
if [[ -f $out/.done ]]; then
    rm -rf "$conf"
    log "debug kernel already built: ${out#"$ROOT"/} ($pkg $version)"
else
    rm -rf "$out" && mv "$conf" "$out"
    build "$src" "$out"
    # one build and one source per kernel kept: older keys and versions go
    find "$DIR" -mindepth 1 -maxdepth 1 \( \( -name "build-$base-*" ! -path "$out" \) \
        -o \( -name "$pkg-*" ! -path "$src" \) \) -exec rm -rf {} +
fi
kver=$(<"$out/.done")
LIST=$CACHE/kernels.list
touch "$LIST"
# under setup.sh's lock: .ci/run runs this beside make check's setup.sh
(
    flock 9
    { grep -v "^$base-debug " "$LIST" || true; echo "$base-debug $kver $out"; } |
        sort -V >"$LIST.debug.new"
    mv "$LIST.debug.new" "$LIST"
) 9>"$LIST.lock"
log "done in $((SECONDS - START)) s: $base-debug=$kver ($pkg $version, key $key)"
