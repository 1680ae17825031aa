#!/bin/bash
# Build the reference host for virtio_balloon_hp: QEMU 10.0 from Debian's
# source package plus host/patches/*.patch, qemu-system-x86_64 only, with
# the devices of host/devices.mak and no others, without debug information
# (together a third less compile time).
#
# Result:  .cache/qemu/bin/qemu-system-x86_64  (the patched binary)
#          .cache/qemu/bin/qemu-hp             (wrapper adding the -L BIOS dirs)
# Cached:  a second run with the same source and patches does nothing.
#
# Environment (all optional):
#   QEMU_SRC_SUITES  suites to try for the source package, in order
#                    (default: "trixie bookworm-backports")
#   QEMU_SRC_VERSION exact Debian version to fetch (default: newest in suite)
#   QEMU_JOBS        parallel build jobs (default: nproc)
#   QEMU_FORCE=1     rebuild even if the cache says it is up to date
set -euo pipefail

HOST_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HOST_DIR/.." && pwd)
CACHE=$ROOT/.cache/qemu
BIN=$CACHE/bin
PATCH_DIR=$HOST_DIR/patches
DEVICES=$HOST_DIR/devices.mak
SRC_SUITES=${QEMU_SRC_SUITES:-trixie bookworm-backports}
JOBS=${QEMU_JOBS:-$(nproc)}
SRC_LIST=/etc/apt/sources.list.d/virtio-balloon-hp-src.sources
BIOS_DIRS=(/usr/share/qemu /usr/share/seabios)
CONFIGURE_ARGS=(--python=/usr/bin/python3 --target-list=x86_64-softmmu
                --without-default-features --enable-kvm --enable-fdt=system
                --enable-pixman --disable-install-blobs --disable-docs
                --enable-trace-backends=log
                --without-default-devices --with-devices-x86_64=vbhp
                --disable-debug-info --disable-qom-cast-debug)
# Build dependencies (bookworm, or bookworm-backports where noted) and the
# packages that ship the firmware the binary loads at run time.
BUILD_PKGS=(gcc make libc6-dev ninja-build pkg-config python3 python3-venv
            libglib2.0-dev zlib1g-dev libfdt-dev libpixman-1-dev
            dpkg-dev xz-utils patch)
BPO_PKGS=(meson)              # QEMU 10.0 needs meson >= 1.5 (bookworm: 1.0)
RUN_PKGS=(qemu-system-x86 seabios)
START=$SECONDS
LOG_TAG="build-qemu"
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"

# Does some apt source other than ours give binary bookworm-backports?
have_binary_backports() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f && $f != "$SRC_LIST" ]] || continue
        awk '/^#/ {next}
            NF == 0 { if (deb && bpo) found = 1; deb = 0; bpo = 0; next }
            $1 == "Types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            $1 == "Suites:" { for (i = 2; i <= NF; i++)
                                  if ($i == "bookworm-backports") bpo = 1 }
            $1 == "Enabled:" && $2 == "no" { deb = 0 }
            END { exit !(found || (deb && bpo)) }' "$f" && return 0
    done
    [[ -f /etc/apt/sources.list ]] &&
        grep -Eq '^deb[[:space:]].*[[:space:]]bookworm-backports([[:space:]]|$)' \
            /etc/apt/sources.list
}

# Our own sources file: deb-src for the suites that carry QEMU 10.0, plus
# binary bookworm-backports (for meson) when nobody else provides it.
ensure_sources() {
    local uri want
    uri=$(mirror_uri bookworm)
    want="# Written by host/build-qemu.sh (virtio_balloon_hp): QEMU 10.0 source
Types: deb-src
URIs: $uri
Suites: $SRC_SUITES
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if ! have_binary_backports; then
        want+="

Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    fi
    [[ -f $SRC_LIST && $(<"$SRC_LIST") == "$want" ]] && return
    ensure_trixie_keyring
    log "writing $SRC_LIST"
    echo "$want" >"$SRC_LIST"
    UPDATED=
}

meson_ok() {
    command -v meson >/dev/null &&
        dpkg --compare-versions "$(meson --version 2>/dev/null || echo 0)" ge 1.5.0
}

install_packages() {
    install_missing "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}"
    if ! meson_ok; then
        apt_update_once
        log "apt-get install ${BPO_PKGS[*]} from bookworm-backports"
        "${APT[@]}" install --no-install-recommends -t bookworm-backports \
            "${BPO_PKGS[@]}"
        meson_ok || die "meson >= 1.5.0 not available"
    fi
}

# Newest (or the requested) version of the qemu source package in suite $1.
src_version() {
    apt-cache madison qemu 2>/dev/null | awk -F'|' -v suite="$1" '
        $3 ~ (" " suite "/[^ ]+ Sources") { gsub(/ /, "", $2); print $2 }' |
        if [[ -n ${QEMU_SRC_VERSION:-} ]]; then grep -Fx -- "$QEMU_SRC_VERSION"
        else sort -V | tail -n1; fi || true
}

# Download the .dsc and its tarballs into $CACHE/src; sets DSC and SRC_DESC.
fetch_source() {
    local suite ver upstream
    mkdir -p "$CACHE/src"
    for suite in $SRC_SUITES; do
        ver=$(src_version "$suite")
        [[ -n $ver ]] || { log "no qemu source in $suite"; continue; }
        upstream=${ver#*:}; upstream=${upstream%-*}
        case $upstream in
            10.0.*) ;;
            *) log "qemu $ver in $suite is not 10.0.x, skipped"; continue ;;
        esac
        DSC=$CACHE/src/qemu_${ver#*:}.dsc
        # apt-get skips files already downloaded (and checks their hashes).
        log "apt-get source --download-only qemu=$ver ($suite)"
        if ! (cd "$CACHE/src" && "${APT[@]}" source --download-only \
                "qemu=$ver"); then
            log "download of qemu $ver from $suite failed"
            continue
        fi
        [[ -f $DSC ]] || continue
        SRC_DESC="qemu $ver ($suite)"
        return
    done
    die "no QEMU 10.0 source package found in: $SRC_SUITES"
}

stamp_text() {
    local p
    echo "source: $SRC_DESC"
    echo "configure: ${CONFIGURE_ARGS[*]}"
    sha256sum "$DEVICES" | sed "s|$HOST_DIR/||"
    for p in "$PATCH_DIR"/*.patch; do
        if [[ -f $p ]]; then
            sha256sum "$p" | sed "s|$PATCH_DIR/||"
        fi
    done
}

print_usage() {
    log "BIOS dirs: ${BIOS_DIRS[*]/#/-L }"
    log "run:  $BIN/qemu-hp [QEMU ARGS]   (= qemu-system-x86_64 ${BIOS_DIRS[*]/#/-L } ...)"
    log "e.g.: $BIN/qemu-hp -device virtio-balloon-pci,hp-block-order=9 ..."
}

write_wrapper() {
    cat >"$BIN/qemu-hp" <<EOF
#!/bin/sh
# Patched QEMU with the BIOS/option ROM dirs of Debian's qemu-system-x86
# and seabios packages (the +ds source tarball ships no firmware).
exec "\$(dirname "\$0")/qemu-system-x86_64" $(printf -- '-L %s ' "${BIOS_DIRS[@]}")"\$@"
EOF
    chmod +x "$BIN/qemu-hp"
}

main() {
    local stamp=$BIN/.stamp tree build p
    # Quick path: nothing to do when the binary matches the inputs and the
    # packages are still installed.  The source version is taken from the
    # stamp here (no apt look-up); QEMU_FORCE=1 re-resolves it.
    if [[ -z ${QEMU_FORCE:-} && -x $BIN/qemu-system-x86_64 && -f $stamp &&
          -x $BIN/qemu-hp ]] && meson_ok &&
       [[ -z $(missing_pkgs "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}") ]]; then
        SRC_DESC=$(sed -n 's/^source: //p' "$stamp")
        if [[ $(stamp_text) == "$(<"$stamp")" ]]; then
            local patches=("$PATCH_DIR"/*.patch)
            [[ -f ${patches[0]} ]] || patches=()
            log "already built: $SRC_DESC + ${#patches[@]} patch(es), nothing to do"
            log "binary: $BIN/qemu-system-x86_64"
            print_usage
            return
        fi
    fi

    ensure_sources
    apt_update_once
    install_packages
    fetch_source
    log "source: $SRC_DESC"

    # Fresh tree every build: unpack (applies Debian's quilt series), then ours.
    tree=$CACHE/qemu-src
    build=$CACHE/build
    rm -rf "$tree" "$build" "$BIN"
    log "unpacking $(basename "$DSC") into $tree"
    dpkg-source --no-check -x "$DSC" "$tree" >"$CACHE/unpack.log" 2>&1 ||
        { cat "$CACHE/unpack.log"; die "dpkg-source -x failed"; }
    grep -q '^10\.0\.' "$tree/VERSION" || die "unexpected VERSION $(cat "$tree/VERSION")"
    for p in "$PATCH_DIR"/*.patch; do
        [[ -f $p ]] || continue
        log "applying $(basename "$p")"
        patch -d "$tree" -p1 --forward --batch --quiet <"$p" ||
            die "patch $(basename "$p") does not apply"
    done

    # --with-devices-x86_64=vbhp names a file in QEMU's own configs tree.
    install -m 0644 "$DEVICES" "$tree/configs/devices/x86_64-softmmu/vbhp.mak"
    mkdir -p "$build"
    log "configure ${CONFIGURE_ARGS[*]}"
    (cd "$build" && "$tree/configure" "${CONFIGURE_ARGS[@]}") >"$CACHE/configure.log" 2>&1 ||
        { tail -n 40 "$CACHE/configure.log"; die "configure failed (log: $CACHE/configure.log)"; }
    log "building qemu-system-x86_64 with $JOBS jobs (log: $CACHE/build.log)"
    local t0=$SECONDS
    ninja -C "$build" -j "$JOBS" qemu-system-x86_64 >"$CACHE/build.log" 2>&1 ||
        { tail -n 40 "$CACHE/build.log"; die "build failed (log: $CACHE/build.log)"; }
    log "compiled in $((SECONDS - t0)) s"

    mkdir -p "$BIN"
    install -m 0755 "$build/qemu-system-x86_64" "$BIN/qemu-system-x86_64"
    write_wrapper
    "$BIN/qemu-system-x86_64" --version | head -n1 | sed 's/^/build-qemu: built /'
    stamp_text >"$stamp"
    log "done in $((SECONDS - START)) s: $BIN/qemu-system-x86_64"
    print_usage
}

main "$@"
