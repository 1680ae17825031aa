#!/bin/bash
# Build the module for one guest kernel from .cache/kernels.list, at W=1 with
# sparse (C=1), in a copy of the sources under .cache/build/<kver>/ so that
# builds for several kernels do not overwrite each other.  Any compiler or
# sparse warning fails the build.  Also builds the static selftests once and
# lists them in .cache/build/selftests/progs.list.
#   tests/setup/build.sh 6.1        -> .cache/build/<kver>/virtio_balloon_hp.ko
#   tests/setup/build.sh 6.1 hooks  -> .cache/build/<kver>-hooks/virtio_balloon_hp_hooks.ko
#                                (VBHP_TEST_HOOKS=y: the test-only debugfs hooks)
#   tests/setup/build.sh 6.1 floor  -> .cache/build/<kver>-floor/vbhp_floor.ko (bench/floor)
#   tests/setup/build.sh 6.1 dma    -> .cache/build/<kver>-dma/vbhp_dma.ko
#                                (selftests/virtio_balloon_hp/dma: 32-bit DMA allocations)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$ROOT/.cache
short=${1:?usage: tests/setup/build.sh <kernel short name, e.g. 6.1> [hooks|floor|dma]}
variant=${2:-}
read -r _ kver kdir < <(grep "^$short " "$CACHE/kernels.list") ||
    { echo "build: kernel $short is not in .cache/kernels.list (run tests/setup/setup.sh)" >&2; exit 1; }

# shellcheck source=tests/setup/kbuild-lib.sh
source "$ROOT/tests/setup/kbuild-lib.sh"

out=$CACHE/build/$kver${variant:+-$variant}
hooks=()
case $variant in
    ''|hooks) src=$ROOT ;;
    floor) src=$ROOT/bench/floor ;;
    dma) src=$ROOT/selftests/virtio_balloon_hp/dma ;;
    *) echo "build: unknown variant '$variant': valid are hooks, floor, dma" >&2; exit 2 ;;
esac
[[ $variant == hooks ]] && hooks=(VBHP_TEST_HOOKS=y)
# Kbuild, the sources of its objects, the headers beside them and uapi/
mkdir -p "$out"
(cd "$src" && shopt -s nullglob &&
    mapfile -t srcs < <(kbuild_sources . | tr ' ' '\n') &&
    cp --parents Kbuild "${srcs[@]}" ./*.h "$out/" &&
    if [[ -d uapi ]]; then cp -r uapi "$out/"; fi)
log=$out/build.log
if ! make -C "$kdir" M="$out" W=1 C=1 "${hooks[@]}" modules >"$log" 2>&1; then
    cat "$log" >&2; echo "build: $kver: make failed" >&2; exit 1
fi
# kbuild prints nothing else for a clean build; anything with file:line is a finding
if grep -E '^[^ ]+:[0-9]+:[0-9]+: ' "$log" >&2; then
    echo "build: $kver: warnings above (W=1 / sparse)" >&2; exit 1
fi

# standalone build (our vbhp_ksft.h), static: the test initramfs has no libc
mkdir -p "$CACHE/build/selftests"
ksft=(make -s --no-print-directory -C "$ROOT/selftests/virtio_balloon_hp"
      OUTPUT="$CACHE/build/selftests" USERLDFLAGS=-static)
"${ksft[@]}" >/dev/null 2>"$CACHE/build/selftests.log" ||
    { cat "$CACHE/build/selftests.log" >&2; exit 1; }
# The programs a test guest carries, as the selftests Makefile names them
# (tests/vbhp/build.py reads this list).
# shellcheck disable=SC2016  # make's $(...), not the shell's
"${ksft[@]}" --eval='vbhp-list-progs: ; @echo $(TEST_GEN_PROGS) $(TEST_GEN_PROGS_EXTENDED)' \
    vbhp-list-progs >"$CACHE/build/selftests/progs.list"
read -r ko _ < <(kbuild_modules "$src")
ko=$out/$ko
if [[ $variant == hooks ]]; then
    # same module, another file name, so an initramfs can carry both
    cp "$ko" "$out/virtio_balloon_hp_hooks.ko"
    ko=$out/virtio_balloon_hp_hooks.ko
fi
echo "$ko"
