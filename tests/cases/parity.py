"""Parity with the in-tree virtio_balloon: free page reporting
(VIRTIO_BALLOON_F_REPORTING) and page poisoning (VIRTIO_BALLOON_F_PAGE_POISON).
The effect is measured on the host: QEMU's resident memory after the guest
frees what it touched.  Run by tests/run_tests.py."""
import threading
import time

from vbhp import MiB, wait_until
from vbhp.balloon import Balloon, balloon_guest, suspend
from vbhp.runner import Skip, test

F_PAGE_POISON, F_REPORTING = 4, 5  # feature bits (uapi virtio_balloon.h)
POISON_VAL = 0xaaaaaaaa  # PAGE_POISON (0xaa) in every byte
DROP_TIMEOUT = 120  # seconds for the host's RSS to fall after the guest frees


def qemu_rss(g):
    """QEMU's resident memory in bytes."""
    return g.qemu_status()['VmRSS']


def features(g):
    """The balloon's negotiated feature bits, as the guest's sysfs shows them."""
    return g.sh('cat /sys/bus/virtio/drivers/virtio_balloon_hp/virtio*/features').strip()


def has_bit(bits, bit):
    return bits[bit] == '1'


def touch_and_free(g, mib, grows=True):
    """Allocate and touch @mib MiB in the guest, then free it; return QEMU's
    RSS before and its peak, sampled every 0.1 s while the program ran.
    @grows: the guest's memory was not all backed yet, so RSS must grow."""
    before, samples, done = qemu_rss(g), [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(qemu_rss(g))
            time.sleep(0.1)
    t = threading.Thread(target=sample)
    t.start()
    try:
        out = g.sh(f'vbhp_alloc -m {mib}', timeout=300)
    finally:
        done.set()
        t.join()
    peak = max(samples + [qemu_rss(g)])
    g.log(f'{out.strip()}; QEMU RSS {before / MiB:.0f} -> peak {peak / MiB:.0f} MiB')
    assert not grows or peak - before >= mib * MiB // 2, \
        f'QEMU RSS grew by {(peak - before) / MiB:.0f} MiB only: the guest did not touch {mib} MiB'
    return before, peak


def settled_rss(g, timeout=60):
    """QEMU's RSS once it moved less than 8 MiB in 5 s (or at @timeout): the
    page reporting core works in passes 2 s apart."""
    deadline, last = time.monotonic() + timeout, qemu_rss(g)
    while time.monotonic() < deadline:
        time.sleep(5)
        now = qemu_rss(g)
        if abs(now - last) < 8 * MiB:
            return now
        last = now
    return last


def reported_drop(g, b, mib, want_drop):
    """touch_and_free(@mib), then wait until the guest has reported at least
    @want_drop bytes and QEMU's RSS fell that much below the peak; return the
    drop in bytes and the seconds it took."""
    r0 = b.stats()['report_pages']
    _, peak = touch_and_free(g, mib)
    t0 = time.monotonic()
    wait_until(lambda: b.stats()['report_pages'] - r0, DROP_TIMEOUT,
               f'{want_drop // MiB} MiB reported', ok=lambda n: n << 12 >= want_drop)
    rss = wait_until(lambda: qemu_rss(g), DROP_TIMEOUT,
                     f'QEMU RSS <= peak - {want_drop // MiB} MiB',
                     ok=lambda r: peak - r >= want_drop)
    secs = time.monotonic() - t0
    rss = settled_rss(g)
    s = b.stats()
    g.log(f'freed {mib} MiB: QEMU RSS {peak / MiB:.0f} -> {rss / MiB:.0f} MiB '
          f'(-{(peak - rss) / MiB:.0f} MiB; -{want_drop // MiB} MiB in {secs:.1f} s, '
          f'settled after {time.monotonic() - t0:.1f} s); reported '
          f'{(s["report_pages"] - r0) >> 8} MiB in {s["report_buffers"]} reports so far')
    assert s['report_errors'] == 0, s
    return peak - rss, secs


def assert_reporting(g, b):
    """REPORTING negotiated and registered with the page reporting core."""
    bits = features(g)
    assert has_bit(bits, F_REPORTING), f'REPORTING not negotiated: {bits}'
    assert b.stats()['reporting'] == 1, b.stats()
    assert 'free page reporting' in g.sh('dmesg | grep virtio_balloon_hp'), 'no probe line'


@test
def reporting_returns_freed_memory(kernel):
    """Stock QEMU, free-page-reporting=on: memory the guest frees leaves QEMU's
    RSS; with the balloon inflated too, the balloon stays exact."""
    with balloon_guest(kernel, 2560, reporting=True) as g:
        b = Balloon(g)
        b.load()
        assert_reporting(g, b)
        drop, _ = reported_drop(g, b, 1536, 1024 * MiB)
        size = 2560 * MiB - 768 * MiB
        b.settle(size)
        drop, _ = reported_drop(g, b, 1024, 640 * MiB)
        assert b.actual() == size
        s = b.stats()
        assert s['current'] == s['target'] == 768 * MiB >> 12, s
        b.check()
        b.settle(2560 * MiB)
        b.check()


@test
def hp_reporting_keeps_queue_order(kernel):
    """Reference host with hp blocks and free-page-reporting=on: the reporting
    queue comes before the hp queues; both carry their own traffic.  Reporting
    comes back after a suspend (freeze unregisters, restore registers) and
    rmmod unregisters it cleanly."""
    with balloon_guest(kernel, 2048, hp=True, reporting=True) as g:
        b = Balloon(g)
        b.load()
        assert_reporting(g, b)
        size = 1024 * MiB
        b.settle(size)
        s = b.stats()
        assert s['hp_order'] == 9 and s['hp_inflate_buffers'] > 0, s
        assert s['inflate_buffers'] == 0, s
        reported_drop(g, b, 640, 384 * MiB)
        assert b.actual() == size
        b.check()
        b.settle(2048 * MiB)
        b.check()
        suspend(g)
        assert b.stats()['reporting'] == 1, b.stats()
        reported_drop(g, b, 512, 320 * MiB)
        g.sh('rmmod virtio_balloon_hp')
        assert g.run('test -d /sys/module/virtio_balloon_hp')[0] != 0


def inflate_on_host_queues(b, size, hp):
    """Settle the balloon at @size and check the books; with @hp every
    block went on the hp queues, none on the 4 KiB ones."""
    b.settle(size)
    b.check()
    s = b.stats()
    assert not hp or (s['hp_inflate_buffers'] and not s['inflate_buffers']), s


def require_page_poisoning(kernel):
    """Skip where page_poison=1 poisons nothing: a kernel built without
    CONFIG_PAGE_POISONING (6.12-cloud), whose driver rightly offers no
    PAGE_POISON and keeps reporting on."""
    if kernel.config('CONFIG_PAGE_POISONING') != 'y':
        raise Skip('CONFIG_PAGE_POISONING off: page_poison=1 has no effect on this kernel')


def page_poison_kept(kernel, hp):
    """page_poison=1 guest on a page-poison=on, deflate-on-oom=on host (the
    reference host with hp blocks if @hp): the poison value reaches the
    host (read back from its config), the host then keeps reported pages
    (the guest poisoned all its free memory at boot, so RSS stays at the
    whole guest), and the kernel's poison check on reallocation finds
    nothing, neither in reported pages nor in blocks the host discarded
    on inflate and the balloon deflated."""
    require_page_poisoning(kernel)
    with balloon_guest(kernel, 2048, hp=hp, reporting=True, deflate_on_oom=True,
                       append='page_poison=1') as g:
        b = Balloon(g)
        b.load()
        assert_reporting(g, b)
        bits = features(g)
        assert has_bit(bits, F_PAGE_POISON), f'PAGE_POISON not negotiated: {bits}'
        s = b.stats()
        assert s['page_poison'] == 1 and s['host_poison_val'] == POISON_VAL, s
        r0 = s['report_pages']
        _, peak = touch_and_free(g, 1024, grows=False)
        wait_until(lambda: b.stats()['report_pages'] - r0, DROP_TIMEOUT, '768 MiB reported',
                   ok=lambda n: n << 12 >= 768 * MiB)
        rss = settled_rss(g)
        g.log(f'reported {(b.stats()["report_pages"] - r0) >> 8} MiB; QEMU RSS '
              f'{peak / MiB:.0f} -> {rss / MiB:.0f} MiB (the host keeps poisoned pages)')
        assert rss >= 2048 * MiB * 9 // 10 and peak - rss < 128 * MiB, \
            'the host discarded poisoned pages'
        touch_and_free(g, 1024, grows=False)
        inflate_on_host_queues(b, 1024 * MiB, hp)
        b.settle(2048 * MiB)  # blocks the host discarded come back to the allocator
        touch_and_free(g, 1024, grows=False)
        assert 'pagealloc:' not in g.sh('dmesg'), 'poison check failed after reporting'


@test
def page_poison_kept_by_host(kernel):
    """Stock QEMU: page_poison_kept()."""
    page_poison_kept(kernel, hp=False)


@test
def hp_page_poison_kept_by_host(kernel):
    """The reference host with hp blocks: page_poison_kept()."""
    page_poison_kept(kernel, hp=True)


@test
def poison_without_host_support_refuses_reporting(kernel):
    """page_poison=1 guest on a host without page-poison: no reporting (the
    host could not keep the poison), and the balloon works."""
    require_page_poisoning(kernel)
    with balloon_guest(kernel, 1024, reporting=True, page_poison=False,
                       append='page_poison=1') as g:
        b = Balloon(g)
        b.load()
        bits = features(g)
        assert not has_bit(bits, F_REPORTING) and not has_bit(bits, F_PAGE_POISON), bits
        assert 'free page reporting off: page_poison is on' in g.sh('dmesg')
        assert b.stats()['reporting'] == 0
        b.settle(512 * MiB)
        b.check()


def zero_poison_reported(kernel, hp):
    """init_on_free=1 guest, deflate-on-oom=on (the reference host with hp
    blocks if @hp): poison value 0 told to the host, which then discards
    reported pages.  The guest zeroed all its free memory at boot, so
    QEMU's RSS drops as soon as the module reports it; the balloon then
    inflates and deflates exactly beside reporting."""
    with balloon_guest(kernel, 2048, hp=hp, reporting=True, deflate_on_oom=True,
                       append='init_on_free=1') as g:
        b = Balloon(g)
        rss0 = qemu_rss(g)
        b.load()
        assert_reporting(g, b)
        assert has_bit(features(g), F_PAGE_POISON)
        s = b.stats()
        assert s['page_poison'] == 1 and s['host_poison_val'] == 0, s
        wait_until(lambda: qemu_rss(g), DROP_TIMEOUT, 'QEMU RSS 1 GiB below its value at load',
                   ok=lambda r: rss0 - r >= 1024 * MiB)
        rss = settled_rss(g)
        g.log(f'module loaded: QEMU RSS {rss0 / MiB:.0f} -> {rss / MiB:.0f} MiB, '
              f'{b.stats()["report_pages"] >> 8} MiB reported')
        reported_drop(g, b, 1024, 640 * MiB)
        inflate_on_host_queues(b, 1024 * MiB, hp)
        b.settle(2048 * MiB)
        b.check()


@test
def init_on_free_reports_zero_poison(kernel):
    """Stock QEMU: zero_poison_reported()."""
    zero_poison_reported(kernel, hp=False)


@test
def hp_init_on_free_reports_zero_poison(kernel):
    """The reference host with hp blocks: zero_poison_reported()."""
    zero_poison_reported(kernel, hp=True)


@test
def hint_offered_turns_reporting_off(kernel):
    """A host offering free page hinting, which this driver does not drive:
    QEMU numbers its queue before the reporting queue, so no reporting (rather
    than reports on the hinting queue), and the balloon works."""
    with balloon_guest(kernel, 1024, reporting=True, free_page_hint=True) as g:
        b = Balloon(g)
        b.load()
        bits = features(g)
        assert not has_bit(bits, F_REPORTING), bits
        assert 'free page reporting off: the host offers free page hinting' in g.sh('dmesg')
        assert b.stats()['reporting'] == 0
        b.settle(512 * MiB)
        b.check()
        b.settle(1024 * MiB)
