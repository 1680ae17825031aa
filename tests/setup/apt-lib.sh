# shellcheck shell=bash
# Shared by tests/setup/setup.sh and host/build-qemu.sh (sourced, not run).
# The caller sets LOG_TAG before sourcing; log/die print with it.
# apt-get always waits for the dpkg lock: several scripts may install at once.
APT=(apt-get -o DPkg::Lock::Timeout=900 -y -q)
export DEBIAN_FRONTEND=noninteractive
UPDATED=

log() { echo "$LOG_TAG: $*"; }
die() { echo "$LOG_TAG: error: $*" >&2; exit 1; }

apt_update_once() {
    [[ -n $UPDATED ]] && return
    log "apt-get update"
    "${APT[@]}" update
    UPDATED=1
}

# The Debian mirror this machine uses for SUITE (default bookworm; deb822 or
# one-line format): scripts that add a suite take its URI from here, never a
# name of their own.  mirror_uri bookworm-security gives the security mirror.
mirror_uri() {
    local suite=${1:-bookworm} f=/etc/apt/sources.list.d/debian.sources uri=
    [[ -f $f ]] && uri=$(awk -v want="$suite" '/^#/ {next}
        NF == 0 { if (bw && uri) exit; bw = 0; uri = ""; next }
        $1 == "URIs:" { uri = $2 }
        $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == want) bw = 1 }
        END { if (bw && uri) print uri }' "$f")
    [[ -z $uri && -f /etc/apt/sources.list ]] && uri=$(awk -v want="$suite" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == want) { print $i; exit } }' /etc/apt/sources.list)
    [[ -n $uri ]] || die "no $suite mirror found in the apt sources"
    echo "$uri"
}

# One-line apt sources for Debian suites, each from this machine's mirror
# for it (a -security suite has its own): "deb URI SUITE main".
sources_lines() {
    local s
    for s in "$@"; do
        case $s in
        *-security) echo "deb $(mirror_uri bookworm-security) $s main" ;;
        *) echo "deb $(mirror_uri bookworm) $s main" ;;
        esac
    done
}

# Prints those of the named packages that are not installed.
missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
            echo "$p"
    done
}

# Installs those of the named packages that are missing, and logs which.
install_missing() {
    local missing
    mapfile -t missing < <(missing_pkgs "$@")
    [[ ${#missing[@]} -eq 0 ]] && { log "apt packages already installed"; return; }
    apt_update_once
    log "apt-get install ${missing[*]}"
    "${APT[@]}" install --no-install-recommends "${missing[@]}"
}

# trixie's Release is signed with keys bookworm's keyring got in an update
# (2023.3+deb12u2 has them): update the keyring first if older.
ensure_trixie_keyring() {
    dpkg --compare-versions "$(dpkg-query -W -f='${Version}' \
        debian-archive-keyring 2>/dev/null || echo 0)" ge 2023.3+deb12u2 && return
    apt_update_once
    log "updating debian-archive-keyring (for trixie's signatures)"
    "${APT[@]}" install --no-install-recommends debian-archive-keyring
}
