"""Booting ballooned (issue 12): the host sets the target before the guest
runs, the initramfs loads the driver, and the balloon fills during boot.
Run by tests/run_tests.py."""
import time

from vbhp import MiB
from vbhp.balloon import Balloon, balloon_guest, boot_ballooned, target_reached_at
from vbhp.runner import test

RAM_MIB = 4096
SIZE = 1024 * MiB  # what the host gives the guest: 3 GiB of 4 stay ballooned
SETTLE = 2  # seconds after the boot before QEMU's peak RSS is read, both boots


@test
def boot_ballooned_host_never_backs_it(kernel):
    """A 4 GiB guest on the reference host, told to keep 1 GiB before it
    runs, booted with init_on_alloc=0: the driver, loaded by the initramfs,
    balloons 3 GiB during boot, and the host backs at most 1% of that more
    than for the same guest booted without a balloon (QEMU's peak RSS,
    VmHWM; with init_on_alloc=1 it is about 500 MiB more, one hp buffer of
    zeroed blocks).  The target is reached before userspace starts (the
    initramfs waits for it, as the package's init-premount script does in
    a Debian guest).  The balloon is exact and gives everything back."""
    with balloon_guest(kernel, RAM_MIB, hp=True, append='init_on_alloc=0') as g:
        time.sleep(SETTLE)
        plain = g.qemu_status()['VmHWM']
    with boot_ballooned(kernel, RAM_MIB, SIZE, hp=True, append='init_on_alloc=0') as g:
        reached = target_reached_at(g, SIZE)
        time.sleep(SETTLE)
        b = Balloon(g)
        b.settle(SIZE)
        b.check()
        peak = g.qemu_status()['VmHWM']
        ballooned = RAM_MIB * MiB - SIZE
        up = g.up_at - g.launched
        g.log(f'target reached {reached:.1f} s after QEMU started, the agent (userspace) '
              f'after {up:.1f} s; QEMU peak RSS {peak // MiB} MiB, '
              f'{plain // MiB} MiB for the same guest without a balloon')
        assert reached <= up, f'userspace came up {reached - up:.2f} s before the target'
        assert 'ballooned after' in g.console(), 'the initramfs did not wait for the balloon'
        assert peak - plain <= ballooned // 100, (peak // MiB, plain // MiB)
        b.settle(b.ram)
        b.check()
