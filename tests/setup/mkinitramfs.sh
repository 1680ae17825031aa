#!/bin/bash
# mkinitramfs.sh KVER OUT.cpio.gz FILE...
# Packs a busybox initramfs for a kernel extracted by setup.sh. Its /init loads
# the virtio PCI transport (when modular) and virtio_blk, copies nothing else
# into the kernel (no balloon driver unless the command line says
# vbhp_insmod=MODULE[,PARAM=VALUE...]), restores a hibernation image when it
# says vbhp_resume=DISK, waits as a Debian guest's initramfs does for a
# balloon to reach its target (debian/initramfs-wait, the package's
# init-premount script), and runs a shell agent on /dev/ttyS1:
#   guest prints "@@VBHP-READY" once, then for each line it reads runs
#   sh -c "$line" and writes the output (stdout+stderr) and "@@VBHP-END <rc>".
# FILEs land in /lib/vbhp/ (on PATH); *.ko.xz and *.ko.zst are decompressed to
# *.ko, and the shared libraries of dynamically linked executables are copied along.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 KVER OUT.cpio.gz [FILE...]" >&2; exit 2; }
KVER=$1 OUT=$2
shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# Debian 12 ships modules in /lib/modules, Debian 13 in /usr/lib/modules
MODDIR=$ROOT/.cache/kernels/$KVER/usr/lib/modules/$KVER
[[ -d $MODDIR ]] || MODDIR=$ROOT/.cache/kernels/$KVER/lib/modules/$KVER
[[ -d $MODDIR ]] || { echo "$0: no modules of $KVER in .cache/kernels: run tests/setup/setup.sh" >&2; exit 1; }

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{dev,proc,sys,tmp,lib/modules,lib/vbhp}

# copy_in SRC DST: copy, decompressing a .xz or .zst source
copy_in() {
    case $1 in
    *.xz) xz -dc "$1" >"$2" ;;
    *.zst) zstd -qdc "$1" >"$2" ;;
    *) cp -L "$1" "$2" ;;
    esac
}

# /init links busybox's applets (busybox --install -s): one process in the
# guest, where a link here cost two forks per applet (this script took
# 4.4 s per boot with them, 0.3 s without)
install -D /bin/busybox "$STAGE/bin/busybox"
mkdir -p "$STAGE"/{sbin,usr/bin,usr/sbin}
ln -s busybox "$STAGE/bin/sh"

# virtio PCI transport: built in from 6.12 on, modules on 6.1 (load order
# matters); virtio_blk for the swap disk of the hibernation test
MODULES=
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    grep -q "/$m\.ko$" "$MODDIR/modules.builtin" && continue
    ko=$(find "$MODDIR/kernel" -regex ".*/$m\.ko\(\.xz\|\.zst\)?" -print -quit)
    [[ -n $ko ]] || { echo "$0: $m is neither built in nor a module of $KVER" >&2; exit 1; }
    copy_in "$ko" "$STAGE/lib/modules/$m.ko"
    MODULES+=" $m"
done

for f in "$@"; do
    name=$(basename "$f") name=${name%.xz} name=${name%.zst}
    copy_in "$f" "$STAGE/lib/vbhp/$name"
    if [[ -x $f ]] && ldd "$f" >/dev/null 2>&1; then
        for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
            mkdir -p "$STAGE$(dirname "$lib")" && cp -L "$lib" "$STAGE$lib"
        done
    fi
done

install -D -m 0755 "$ROOT/debian/initramfs-wait" "$STAGE/scripts/init-premount/virtio-balloon-hp"

cat >"$STAGE/init" <<EOF
#!/bin/sh
# --install finds busybox through /proc/self/exe
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/lib/vbhp
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /tmp
MODULES="$MODULES"
for m in \$MODULES; do
    insmod /lib/modules/\$m.ko || echo "init: insmod \$m failed"
done
EOF
cat >>"$STAGE/init" <<'EOF'
# vbhp_resume=DISK: restore the hibernation image on DISK.  The kernel's own
# resume= looks before this init has loaded virtio_blk, so it cannot.
# vbhp_insmod=MODULE[,PARAM=VALUE...]: load MODULE here, as an initramfs
# that carries the balloon driver does, before the agent starts.
for arg in $(cat /proc/cmdline); do
    case $arg in
    vbhp_insmod=*)
        insmod $(echo "${arg#vbhp_insmod=}" | tr , ' ') || echo "init: $arg failed" ;;
    vbhp_resume=*)
        cat "/sys/block/${arg#vbhp_resume=}/dev" >/sys/power/resume ||
            echo "init: no hibernation image restored from ${arg#vbhp_resume=}" ;;
    esac
done
# Before the agent (userspace) starts, as a Debian guest's initramfs does
# before it mounts the root file system: let a balloon the host gave a
# target before the guest ran reach it.
/scripts/init-premount/virtio-balloon-hp
EOF
cat >>"$STAGE/init" <<'EOF'
# The agent runs as PID 1: the OOM killer never picks it.
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
echo "init: agent on ttyS1"
printf '@@VBHP-READY\n' >&3
# Each line is read by head, not the shell's read: busybox's read drops the
# bytes it has so far when a signal interrupts it (PID 1 gets SIGCHLD for
# every orphan that exits), and the rest of the line then runs as a command
# of its own.  head may read past the newline, which is safe because the
# host sends the next line only after it has seen @@VBHP-END.  An empty line
# (the host never sends one) means the channel is gone for now.
while :; do
    line=$(head -n 1 <&3)
    [ -n "$line" ] || { sleep 1; continue; }
    sh -c "$line" </dev/null >/tmp/.agent.out 2>&1
    rc=$?
    cat /tmp/.agent.out >&3
    # end the output with a newline so the marker starts a line
    [ -n "$(tail -c 1 /tmp/.agent.out)" ] && echo >&3
    printf '@@VBHP-END %d\n' "$rc" >&3
done
EOF
chmod +x "$STAGE/init"

(cd "$STAGE" && find . | cpio -o -H newc --quiet) | gzip -1 >"$OUT"
