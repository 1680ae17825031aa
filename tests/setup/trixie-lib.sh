# shellcheck shell=bash
# The Debian 13 (trixie) chroot under .cache/trixie-root/, made with mmdebstrap.
# Trixie's kernels (6.12, 6.12-cloud, 7.3 from trixie-backports) are built with
# gcc-14 and their kbuild tools are linked against trixie's libc, so the module
# is built for them in here, never with the host's gcc-12; and trixie's kernel
# packages are downloaded through this chroot's apt, so the host's own apt
# sources never see trixie.  Sourced (after apt-lib.sh, with CACHE set) by
# tests/setup/setup.sh, which makes the chroot, and tests/setup/build.sh.
TRIXIE=$CACHE/trixie-root
# What the module build needs: the compiler of trixie's kernels, sparse (C=1),
# the libraries of the kbuild tools (objtool: libelf; sign-file: libssl), and
# pahole for the modules' BTF (trixie's headers carry a vmlinux).
TRIXIE_PACKAGES=(gcc-14 make libc6-dev sparse bc kmod xz-utils libelf1t64 libssl3t64 pahole)
TRIXIE_UPDATED=

# The chroot's apt sources, one-line format, mirrors taken from the host's.
trixie_sources() {
    sources_lines trixie trixie-updates trixie-security trixie-backports
}

# Make the chroot unless one with the same sources and packages is cached.
trixie_ensure() {
    local want sources
    mapfile -t sources < <(trixie_sources)
    want=$(printf '%s\n' "${sources[@]}" "packages: ${TRIXIE_PACKAGES[*]}")
    if [[ -f $TRIXIE/.vbhp-stamp && $(<"$TRIXIE/.vbhp-stamp") == "$want" ]]; then
        log "trixie chroot already made"
        return
    fi
    ensure_trixie_keyring
    log "making the trixie chroot ${TRIXIE#"$ROOT"/} (mmdebstrap)"
    rm -rf "$TRIXIE.new" "$TRIXIE"
    mmdebstrap --quiet --variant=apt --skip=cleanup/apt/lists \
        --include="$(IFS=,; echo "${TRIXIE_PACKAGES[*]}")" \
        trixie "$TRIXIE.new" "${sources[@]}"
    echo "$want" >"$TRIXIE.new/.vbhp-stamp"
    mv "$TRIXIE.new" "$TRIXIE"
    TRIXIE_UPDATED=1  # mmdebstrap kept fresh package lists
}

trixie_apt_update_once() {
    [[ -n $TRIXIE_UPDATED ]] && return
    log "apt-get update (trixie chroot)"
    chroot "$TRIXIE" "${APT[@]}" update
    TRIXIE_UPDATED=1
}

# trixie_run DIR... -- CMD...: run CMD in the chroot with each DIR bind-mounted
# at the same path, in a private mount namespace (the mounts end with CMD).
trixie_run() {
    local dirs=()
    while [[ $1 != -- ]]; do dirs+=("$1"); shift; done
    shift
    [[ -f $TRIXIE/.vbhp-stamp ]] || die "no trixie chroot in ${TRIXIE#"$ROOT"/}: run tests/setup/setup.sh"
    # shellcheck disable=SC2016  # expanded by the inner shell
    unshare --mount --fork bash -c '
        set -e; root=$1 n=$2; shift 2
        for d in "${@:1:n}"; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
        shift "$n"
        mount -t proc proc "$root/proc"
        exec chroot "$root" "$@"' _ "$TRIXIE" "${#dirs[@]}" "${dirs[@]}" "$@"
}
