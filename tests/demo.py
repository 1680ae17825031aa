#!/usr/bin/python3
"""make demo: boot a guest with virtio_balloon_hp and balloon it live.

Inflates 3 GiB of a 4 GiB guest and deflates it again through QMP, printing
one live line: host target and actual, the rate, and the blocks the driver
holds per order (from its debugfs file).
Usage: tests/demo.py [KERNEL]   (default: the first in .cache/kernels.list)
"""
import sys
import time

from vbhp import MiB
from vbhp.balloon import Balloon, balloon_guest
from vbhp.kernels import kernels

GiB = 1024 * MiB
RAM_MIB = 4096


def live_line(b, want, t0, a0):
    actual = b.actual()
    s = b.stats()
    moved = abs(actual - a0) / GiB
    secs = max(time.monotonic() - t0, 1e-3)
    orders = ' '.join(f'o{o}:{s[f"held_o{o}"]}' for o in range(b.order, -1, -1)
                      if s[f'held_o{o}'])
    sys.stdout.write(f'\r  target {want / GiB:5.2f} GiB  actual {actual / GiB:5.2f} GiB  '
                     f'{moved / secs:5.2f} GiB/s  blocks {orders or "none":<30}')
    sys.stdout.flush()
    return actual


def move(b, want, label):
    print(f'{label}: guest size -> {want / GiB:.2f} GiB')
    a0 = b.actual()
    t0 = time.monotonic()
    b.set_size(want)
    while live_line(b, want, t0, a0) != want:
        if time.monotonic() - t0 > 600:
            raise SystemExit('\ndemo: the balloon did not reach its target in 10 minutes')
        time.sleep(0.25)
    print(f'\n{label}: done in {time.monotonic() - t0:.1f} s')


def main():
    kernel = sys.argv[1] if len(sys.argv) > 1 else kernels()[0]
    print(f'demo: booting a {RAM_MIB} MiB guest, kernel {getattr(kernel, "kver", kernel)} (QEMU TCG unless KVM works)')
    with balloon_guest(kernel, RAM_MIB) as g:
        b = Balloon(g)
        b.load('page_order=9')
        print(f'demo: virtio_balloon_hp loaded, MemTotal {b.boot_kb // 1024} MiB')
        move(b, RAM_MIB * MiB - 3 * GiB, 'inflate')
        print(f'demo: guest MemTotal now {g.meminfo()["MemTotal"] // 1024} MiB')
        move(b, RAM_MIB * MiB, 'deflate')
        print(f'demo: guest MemTotal back to {g.meminfo()["MemTotal"] // 1024} MiB')
        problems = g.kernel_problems()
        if problems:
            raise SystemExit('demo: the guest kernel complained:\n' + '\n'.join(problems))


if __name__ == '__main__':
    main()
