"""Reliability: a device that refuses buffers, breaks, fails to come back
from suspend, or is unplugged mid-inflate loses nothing and hangs nothing.
The faults come from the test-hooks build (VBHP_TEST_HOOKS) or from the
host (QMP device_del); the host is stock QEMU.  Run by tests/run_tests.py."""
import itertools
import re
import time

from vbhp import MiB, wait_until
from vbhp.balloon import DRIVER, HOOKS_MODULE, Balloon, balloon_guest, suspend
from vbhp.qmp import QmpError
from vbhp.runner import test

HOOK = '/sys/kernel/debug/virtio_balloon_hp_'   # + fail_sends, break, fail_restore


@test
def refused_buffers_lose_nothing(kernel):
    """Buffers the virtqueue refuses (as on a broken device or a full
    swiotlb) are not counted in flight: their blocks are put back and the
    balloon still reaches every target exactly, inflating and deflating."""
    with balloon_guest(kernel, 2048, hooks=True) as g:
        b = Balloon(g)
        b.load(module=HOOKS_MODULE)
        b.settle(1536 * MiB)
        for size in (768 * MiB, 1792 * MiB):      # inflate, then deflate
            g.sh(f'echo 3 > {HOOK}fail_sends')
            b.settle(size)
            assert g.sh(f'cat {HOOK}fail_sends').strip() == '0', 'not every refusal happened'
            b.check()
        errors = b.stats()['xfer_errors']
        assert errors == 6, f'xfer_errors == {errors}, want 6'
        assert 'buffer not sent: -5' in g.sh('dmesg')
        g.sh('rmmod virtio_balloon_hp')
        assert g.meminfo()['MemTotal'] == b.boot_kb
        assert b.actual() == 2048 * MiB, b.actual()


@test
def broken_device_never_hangs(kernel):
    """A device that breaks mid-inflate (virtio_break_device(), as a surprise
    removal does) ends every wait: the worker stops, rmmod returns, and the
    blocks the host may still hold stay ballooned, said in the log."""
    with balloon_guest(kernel, 2048, hooks=True) as g:
        b = Balloon(g)
        b.load(module=HOOKS_MODULE)
        b.set_size(512 * MiB)
        wait_until(lambda: b.stats()['current'], 120, 'the inflate under way',
                   ok=lambda c: c >= (256 * MiB) >> 12)
        g.sh(f'echo 1 > {HOOK}break')
        b.set_size(1024 * MiB)          # the worker runs again, on the broken device
        wait_until(lambda: 'device broken: the balloon stays' in g.sh('dmesg'), 30,
                   'the worker to stop on the broken device')
        held = b.stats()['current']
        t = time.monotonic()
        g.sh('rmmod virtio_balloon_hp', timeout=60)
        g.log(f'rmmod on the broken device took {time.monotonic() - t:.1f} s, '
              f'{held >> 8} MiB held')
        kept = re.search(r'device broken: (\d+) MiB stay ballooned', g.sh('dmesg'))
        assert kept, 'teardown did not say what stays ballooned'
        assert int(kept.group(1)) == held >> 8, (kept.group(0), held)
        assert g.meminfo()['MemTotal'] == b.boot_kb - held * 4, 'MemTotal off'


@test
def failed_restore_then_rmmod(kernel):
    """A restore that fails leaves no stale queue pointer behind: rmmod
    afterwards neither crashes nor deletes the queues twice, and MemTotal is
    exact (freeze had emptied the balloon through the host)."""
    with balloon_guest(kernel, 2048, hooks=True) as g:
        b = Balloon(g)
        b.load(module=HOOKS_MODULE)
        b.settle(1024 * MiB)
        g.sh(f'echo Y > {HOOK}fail_restore')
        suspend(g)
        assert 'error -12' in g.sh('dmesg'), 'the restore did not fail'
        g.sh('rmmod virtio_balloon_hp', timeout=60)
        assert g.meminfo()['MemTotal'] == b.boot_kb


@test
def stats_flow_after_restore(kernel):
    """The stats buffer is handed back on restore before the driver could
    drop the host's first request: guest-stats keep updating after a
    suspend."""
    with balloon_guest(kernel, 2048) as g:
        b = Balloon(g)
        b.load()
        b.poll_guest_stats()
        before = wait_until(b.last_update, 30, 'guest stats flowing', ok=bool)
        suspend(g)
        resumed = time.time()
        wait_until(b.last_update, 30, 'guest-stats last-update past the resume',
                   ok=lambda t: t > resumed + 1)
        assert b.last_update() > before


@test
def whole_block_buffers_lose_nothing(kernel):
    """whole_blocks=1 (the default) with 1 and 2 buffers in flight: every 4 KiB buffer
    holds whole 2 MiB blocks (512 frames), refused buffers put their blocks
    back, targets that split a block are met exactly, rmmod returns all."""
    with balloon_guest(kernel, 2048, hooks=True) as g:
        b = Balloon(g)
        for inflight in (1, 2):
            b.load(f'page_order=9 whole_blocks=1 max_inflight={inflight}', module=HOOKS_MODULE)
            s = b.stats()
            assert s['whole_blocks'] == 1 and s['inflate_max_inflight'] == inflight, s
            b.settle(1024 * MiB)
            s = b.stats()
            # 2 MiB blocks only (no fallback): 512 frames in every buffer
            assert s['inflate_pfns'] == 1024 * MiB >> 12, s
            assert s['inflate_buffers'] == s['inflate_pfns'] // 512 or s['fallbacks'], s
            for size in (768 * MiB, 1536 * MiB):      # inflate, then deflate
                g.sh(f'echo 3 > {HOOK}fail_sends')
                b.settle(size)
                assert g.sh(f'cat {HOOK}fail_sends').strip() == '0', 'not every refusal happened'
                b.check()
            for size in (1024 * MiB - 12 * 1024, 1024 * MiB + 8 * 1024):
                b.settle(size)
                b.check()
            s = b.stats()
            assert s['xfer_errors'] == 6, s
            g.log(f'max_inflight={inflight}: {s["inflate_buffers"]} inflate buffers of '
                  f'{s["inflate_pfns"]} frames, {s["deflate_buffers"]} deflate buffers of '
                  f'{s["deflate_pfns"]} frames')
            g.sh('rmmod virtio_balloon_hp')
            assert g.meminfo()['MemTotal'] == b.boot_kb
            assert b.actual() == 2048 * MiB, b.actual()


def bound_devices(g):
    """The virtio devices our driver is bound to, from sysfs."""
    return g.sh(f'ls {DRIVER} | grep ^virtio || true').split()


@test
def unplug_mid_inflate(kernel):
    """QMP device_del of the balloon (on a PCIe root port) while it
    inflates, as a host's management stack does it.  The targets keep
    moving until the guest lets go of the device, so remove() runs with the
    balloon busy.  The host gets DEVICE_DELETED, the guest has all its
    memory back, nothing hangs; a balloon plugged in again works."""
    with balloon_guest(kernel, 2048, hotplug=True) as g:
        b = Balloon(g)
        b.load()
        b.set_size(512 * MiB)
        wait_until(lambda: b.stats()['current'], 120, 'the inflate under way',
                   ok=lambda c: c >= (256 * MiB) >> 12)
        s = b.stats()
        t = time.monotonic()
        g.qmp.cmd('device_del', id='balloon0')
        sizes = itertools.cycle((1536 * MiB, 512 * MiB))

        def deleted():
            if g.qmp.events('DEVICE_DELETED'):
                return True
            try:
                b.set_size(next(sizes))
            except QmpError:
                pass  # QEMU has let go of the balloon already
            return False

        wait_until(deleted, 120, 'DEVICE_DELETED after device_del', interval=0.5)
        g.log(f'device_del with {s["current"] >> 8} of {s["target"] >> 8} MiB ballooned; '
              f'DEVICE_DELETED {time.monotonic() - t:.1f} s later')
        assert not bound_devices(g), bound_devices(g)
        assert g.meminfo()['MemTotal'] == b.boot_kb, 'memory not all given back'
        g.qmp.cmd('device_add', driver='virtio-balloon-pci', id='balloon0', bus='vbhp-port')
        wait_until(lambda: bound_devices(g), 60, 'the driver to bind the new balloon')
        b.settle(1024 * MiB)
        b.check()
        g.sh('rmmod virtio_balloon_hp')
        assert g.meminfo()['MemTotal'] == b.boot_kb
