#!/usr/bin/python3
"""Image tier: the Debian guest images of tests/setup/mkimage.sh, each booted
on Debian's QEMU and on the reference host (hp-block-order=9), with
docs/cloud-init.yaml as user-data.  In the guest, cloud-init installs the
virtio-balloon-hp-dkms package (DKMS builds the module there), lets udev and
modprobe.d load the driver and runs the kselftests; the host starts the guest
with part of its memory ballooned, checks over QMP that the driver reaches
that target (query-balloon) and that guest statistics come in, and reads the
TAP and the summary line from the serial console.

Usage: VBHP_DEB=path/to/virtio-balloon-hp-dkms_VER_all.deb tests/cases/images.py [NAME-SUBSTRING ...]
(make check-images builds the images and the .deb, then runs this.)
The reference-host boot of an image reuses the disk of its stock boot (a
qcow2 overlay on it), where DKMS has already built the module.
"""
import os
import shutil
import sys
import time

from vbhp import ROOT, MiB, wait_until
from vbhp.images import SUMMARY, TAG, Image, ImageBoot
from vbhp.runner import main, test

# image -> kernel series DKMS must have built the module for
IMAGES = {
    'deb12-6.1': ('6.1.',),
    'deb13-6.12': ('6.12.',),
    'deb13-6.12-cloud': ('6.12.',),
    'deb13-7.3': ('7.',),
}
HOSTS = ('stock', 'hp')
MEM_MIB = 2048
TARGET_MIB = 1536          # the host's balloon target from the start: 512 MiB ballooned
BOOT_TIMEOUT = 600         # QEMU start to the user-data's first line
INSTALL_TIMEOUT = 900      # package install and DKMS build(s), driver up
SUITE_TIMEOUT = 900        # kselftests to the summary line

_disks = {}   # image -> overlay of its passing stock boot, the base of its hp boot
_dirs = {}    # image -> run dirs to remove once all its boots passed


def deb_path():
    deb = os.environ.get('VBHP_DEB', '')
    if not deb.endswith('.deb') or not os.path.isfile(deb):
        raise RuntimeError(f'VBHP_DEB={deb!r}: set it to the virtio-balloon-hp-dkms .deb '
                           '(the last line `make deb` prints)')
    return deb


def boot_image(name, host):
    image = Image(name)
    with ImageBoot(image, host, deb_path(), base=_disks.get(name), mem_mib=MEM_MIB,
                   target_mib=TARGET_MIB, boot_timeout=BOOT_TIMEOUT) as b:
        _dirs.setdefault(name, []).append(b.dir)
        log = lambda msg: print(f'# {name}/{host}: {msg}', flush=True)  # noqa: E731
        log(f'kernel {image.kver}, disk on {os.path.relpath(b.base, ROOT)}')
        b.qmp.cmd('qom-set', path='/machine/peripheral/balloon0',
                  property='guest-stats-polling-interval', value=2)
        b.wait_line(TAG + ': virtio_balloon_hp is up', INSTALL_TIMEOUT, 'driver up')

        dkms = [line for line in b.lines(TAG + ': dkms: ') if 'installed' in line]
        log('dkms: ' + '; '.join(dkms))
        for series in IMAGES[name]:
            assert any(f', {series}' in line for line in dkms), \
                f'DKMS did not install the module for a {series}x kernel: {dkms}'

        # The host's view: the driver that came up takes the balloon to the
        # target the host set before boot, and its statistics come in.
        want = TARGET_MIB
        wait_until(b.actual_mib, 300, f'query-balloon actual == {want} MiB', ok=lambda a: a == want)
        reached = time.time()
        stats = wait_until(b.guest_stats, 30, 'guest stats sent after the balloon reached the target',
                           ok=lambda s: s['last-update'] > reached)
        total = stats['stats']['stat-total-memory'] / MiB
        log(f'query-balloon actual {want} MiB; guest stats: total {total:.0f} MiB, '
            f'free {stats["stats"]["stat-free-memory"] / MiB:.0f} MiB')
        assert want - 512 < total <= want, \
            f'guest stat-total-memory {total:.0f} MiB does not show {MEM_MIB - want} MiB ballooned'

        b.wait_line(TAG + ': running the kselftests', SUITE_TIMEOUT, 'kselftests start')
        m = b.wait_line(SUMMARY.pattern, SUITE_TIMEOUT, 'summary line')
        for line in b.lines(TAG + ': | '):
            print(f'#   {line}')
        log(m.group(0))
        b.wait_exit(180)
        verdict, passed, failed, kver = m.group(1), int(m.group(2)), int(m.group(3)), m.group(5)
        assert kver == image.kver, f'the suite ran on {kver}, not the image kernel {image.kver}'
        assert verdict == 'PASS' and failed == 0 and passed > 0, m.group(0)
        assert not b.kernel_problems(), b.kernel_problems()[0]
        mk = b.marks
        log(f'times: boot to user-data {mk["cloud-init runs the user-data"]:.0f} s, '
            f'install+DKMS to driver up {mk["driver up"] - mk["cloud-init runs the user-data"]:.0f} s, '
            f'suite {mk["summary line"] - mk["kselftests start"]:.0f} s, '
            f'total {b.elapsed():.0f} s')
    if host == 'stock':
        _disks[name] = b.overlay
    if host == HOSTS[-1]:  # every boot of this image passed (a failure raised above)
        for d in _dirs.pop(name, []):
            shutil.rmtree(d, ignore_errors=True)


def _register(name, host):
    def fn():
        try:
            boot_image(name, host)
        except BaseException:
            for d in _dirs.get(name, []):
                print(f'# kept {os.path.relpath(d, ROOT)} (console.log, qemu.log, disk.qcow2)')
            raise
    fn.__name__ = f'image_{name}_{host}'
    fn.__doc__ = f'{name} on the {host} host: cloud-init installs the .deb, runs the kselftests'
    test(per_kernel=False)(fn)


for _name in IMAGES:
    for _host in HOSTS:
        _register(_name, _host)

if __name__ == '__main__':
    sys.exit(main())
