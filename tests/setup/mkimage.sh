#!/bin/bash
# Build the Debian guest images of the image tier (tests/cases/images.py) from
# Debian packages with mmdebstrap: no downloaded cloud image.  Each image is
# cached under .cache/images/NAME/ and rebuilt only when its recipe changes.
#
#   tests/setup/mkimage.sh [NAME...]      (default: all; names below)
#
#   deb12-6.1         Debian 12, its 6.1 kernel (linux-image-amd64)
#   deb13-6.12        Debian 13, its 6.12 kernel, generic flavour
#   deb13-6.12-cloud  Debian 13, its 6.12 kernel, cloud flavour
#   deb13-7.3         Debian 13 with trixie-backports' 7.x kernel only
#
# Every image has systemd, cloud-init, dkms, gcc, make, initramfs-tools and
# the headers of its kernels; DKMS builds inside the guest, with the guest's
# own gcc.  Result in .cache/images/NAME/: disk.img (raw ext4, label root),
# vmlinuz, initrd.img and kver of the kernel to boot, recipe (what the
# cache key is made of), build.txt (time and sizes).  The apt sources take
# the machine's Debian mirror (mirror_uri in apt-lib.sh) at build time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGES=$ROOT/.cache/images
ALL=(deb12-6.1 deb13-6.12 deb13-6.12-cloud deb13-7.3)
DISK_SIZE=4G
LOG_TAG=mkimage
# shellcheck source=tests/setup/apt-lib.sh
source "$ROOT/tests/setup/apt-lib.sh"

# What every image carries besides its kernel.
BASE=(systemd-sysv udev kmod e2fsprogs cloud-init dkms gcc make libc6-dev initramfs-tools)

# Sets SUITE (the release), SUITES (apt suites), KERNEL (packages from
# SUITE) and BACKPORTS (packages then installed from trixie-backports) for
# image $1.
recipe() {
    KERNEL='' BACKPORTS=''
    case $1 in
    deb12-6.1)
        SUITE=bookworm SUITES="bookworm bookworm-updates bookworm-security"
        KERNEL="linux-image-amd64 linux-headers-amd64" ;;
    deb13-6.12)
        SUITE=trixie SUITES="trixie trixie-updates trixie-security"
        KERNEL="linux-image-amd64 linux-headers-amd64" ;;
    deb13-6.12-cloud)
        SUITE=trixie SUITES="trixie trixie-updates trixie-security"
        KERNEL="linux-image-cloud-amd64 linux-headers-cloud-amd64" ;;
    deb13-7.3)
        # backports' 7.x alone: one DKMS build in the guest, so that CI can
        # afford this boot (the 6.12 images cover trixie's own kernel)
        SUITE=trixie SUITES="trixie trixie-updates trixie-security trixie-backports"
        BACKPORTS="linux-image-amd64 linux-headers-amd64" ;;
    *) die "unknown image '$1': valid names are ${ALL[*]}" ;;
    esac
}

# What the initramfs of these images holds: only the modules that mount the
# root file system (MODULES=list), not most of the kernel's drivers.  That
# keeps each initramfs build short, here and in the guest, where the package
# rebuilds it under TCG after DKMS installed the module (the package's own
# modules.d entry adds virtio_balloon_hp in any MODULES mode).
INITRAMFS_MODULES=(virtio_pci virtio_blk ext4)

# The mmdebstrap setup hook that writes this before any package is
# installed, so that the kernel's first initramfs is already built this way.
# Neither file belongs to a package.
initramfs_hook() {
    local conf=/etc/initramfs-tools/conf.d/vbhp-image.conf
    local list=/usr/share/initramfs-tools/modules.d/vbhp-image
    # shellcheck disable=SC2016  # $1 is the hook's: mmdebstrap's shell expands it
    printf 'mkdir -p "$1%s" "$1%s" && echo MODULES=list >"$1%s" && printf "%%s\\n" %s >"$1%s"' \
        "${conf%/*}" "${list%/*}" "$conf" "${INITRAMFS_MODULES[*]}" "$list"
}

# Guest configuration on top of the packages (runs on the root directory).
configure_root() {
    local dir=$1 name=$2
    echo "$name" >"$dir/etc/hostname"
    echo 'LABEL=root / ext4 errors=remount-ro 0 1' >"$dir/etc/fstab"
    # Only the NoCloud seed disk, no network: the guests run with -nic none.
    cat >"$dir/etc/cloud/cloud.cfg.d/90-vbhp-image.cfg" <<'CFG'
datasource_list: [NoCloud, None]
network: {config: disabled}
CFG
    # root may log in on the serial console without a password (debugging)
    sed -i 's/^root:[^:]*:/root::/' "$dir/etc/shadow"
}

# The cache key: everything above that decides what goes into the image.
recipe_text() {
    recipe "$1"
    printf 'name=%s suite=%s suites=%s\nbase=%s\nkernel=%s\nbackports=%s\nsize=%s\n' \
        "$1" "$SUITE" "$SUITES" "${BASE[*]}" "$KERNEL" "$BACKPORTS" "$DISK_SIZE"
    declare -f configure_root
    initramfs_hook
}

build() {
    local name=$1 out=$IMAGES/$1 tmp t0=$SECONDS src=() kver vmlinuz
    recipe "$name"
    if [[ -f $out/recipe && $(<"$out/recipe") == "$(recipe_text "$name")" && -f $out/build.txt ]]; then
        log "$name: up to date ($(head -1 "$out/build.txt"))"
        return
    fi
    # shellcheck disable=SC2086  # SUITES is a list of words
    mapfile -t src < <(sources_lines $SUITES)
    tmp=$IMAGES/.$name.tmp
    rm -rf "$tmp" && mkdir -p "$tmp"
    log "$name: mmdebstrap $SUITE ($SUITES)"
    # Downloaded .debs are kept in $IMAGES/archives and shared by the images.
    # eatmydata: no fsync while dpkg unpacks (the image is made in one go, and
    # remade from scratch if anything fails); no documentation in the image.
    local hooks=(--skip=essential/unlink
                 --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata
                 --dpkgopt='path-exclude=/usr/share/doc/*'
                 --dpkgopt='path-exclude=/usr/share/man/*'
                 --dpkgopt='path-exclude=/usr/share/locale/*'
                 --setup-hook="$(initramfs_hook)"
                 --setup-hook='mkdir -p "$1/var/cache/apt/archives"'
                 --setup-hook="sync-in $IMAGES/archives /var/cache/apt/archives")
    [[ -n $BACKPORTS ]] && hooks+=(--customize-hook="chroot \"\$1\" apt-get install -y -q -t trixie-backports $BACKPORTS")
    hooks+=(--customize-hook="sync-out /var/cache/apt/archives $IMAGES/archives")
    mkdir -p "$IMAGES/archives"
    mmdebstrap --variant=apt --components=main \
        --include="$(IFS=,; echo "${BASE[*]}")${KERNEL:+,${KERNEL// /,}}" \
        "${hooks[@]}" "$SUITE" "$tmp/root" "${src[@]}" >"$tmp/mmdebstrap.log" 2>&1 ||
        { tail -30 "$tmp/mmdebstrap.log" >&2; die "$name: mmdebstrap failed, log in $tmp/mmdebstrap.log"; }
    configure_root "$tmp/root" "$name"
    # the newest kernel is the one to boot (7.x keeps vmlinuz under /usr/lib/modules)
    kver=$(ls "$tmp/root/usr/lib/modules" | sort -V | tail -1)
    vmlinuz=$tmp/root/boot/vmlinuz-$kver
    [[ -f $vmlinuz ]] || vmlinuz=$tmp/root/usr/lib/modules/$kver/vmlinuz
    [[ -f $vmlinuz && -f $tmp/root/boot/initrd.img-$kver ]] ||
        die "$name: no vmlinuz or initrd.img for $kver in the image"
    cp "$vmlinuz" "$tmp/vmlinuz"
    cp "$tmp/root/boot/initrd.img-$kver" "$tmp/initrd.img"
    echo "$kver" >"$tmp/kver"
    local used npkg
    used=$(du -sm "$tmp/root" | cut -f1)
    npkg=$(chroot "$tmp/root" dpkg-query -W | wc -l)
    mke2fs -q -F -t ext4 -L root -d "$tmp/root" "$tmp/disk.img" "$DISK_SIZE" >/dev/null
    rm -rf "$tmp/root"
    recipe_text "$name" >"$tmp/recipe"
    printf '%s s, %s MiB of files, kernel %s, packages %s\n' "$((SECONDS - t0))" "$used" "$kver" \
        "$npkg" >"$tmp/build.txt"
    rm -rf "$out" && mv "$tmp" "$out"
    log "$name: built in $(head -1 "$out/build.txt")"
}

# The host tools of the image tier: these images, their seed disks
# (cloud-localds) and the qcow2 overlays the guests boot on (qemu-img).
# `mkimage.sh --tools` installs only these (.ci/run, before it builds the
# images beside make check, so that no two apt runs overlap).
TOOLS=(mmdebstrap e2fsprogs cloud-image-utils qemu-utils)
if [[ ${1:-} == --tools ]]; then install_missing "${TOOLS[@]}"; exit 0; fi

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
for n in "${names[@]}"; do recipe "$n"; done   # refuse a bad name before any work
install_missing "${TOOLS[@]}"
mkdir -p "$IMAGES"
for n in "${names[@]}"; do build "$n"; done
