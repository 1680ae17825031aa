"""The core tests: the harness, the build, parameters, inflate/deflate on
stock QEMU and on the reference host, suspend, rmmod.  Run by
tests/run_tests.py."""
import os
import subprocess
import sys
import time

from vbhp import MiB, ROOT, TESTS_DIR, wait_until
from vbhp.balloon import (HOOKS_MODULE, INTREE_MODULE, MODULE, Balloon, balloon_guest, fragment,
                          suspend, trace_count, unfragment)
from vbhp.build import build_module
from vbhp.guest import Guest
from vbhp.hosts import HP_ORDER
from vbhp.runner import test


@test
def intree_balloon_baseline(kernel):
    """The harness itself, against the kernel's own virtio_balloon."""
    with Guest(kernel, mem_mib=1024, files=[kernel.module('virtio_balloon')]) as g:
        g.log(f'boot: {g.boot_seconds:.1f} s')
        assert g.sh('uname -r').strip() == kernel.kver
        rc, out = g.run("printf '%s\\n' \"it's\" 'a \"quoted\" arg'; exit 3")
        assert (rc, out) == (3, 'it\'s\na "quoted" arg\n'), (rc, out)
        total = g.meminfo()['MemTotal']
        b = Balloon(g)
        b.load('', module=INTREE_MODULE)
        for size, kb in ((768 * MiB, total - 256 * 1024), (1024 * MiB, total)):
            b.set_size(size)
            wait_until(b.actual, 120, f'actual == {size}', ok=lambda a: a == size)
            wait_until(lambda: g.meminfo()['MemTotal'], 10, f'MemTotal == {kb} kB',
                       ok=lambda v: v == kb)


@test(per_kernel=False)
def bench_quick():
    """make bench QUICK=1: every variant reaches its targets (no timing asserted)."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'run.py'), '--quick',
                          '--out', os.path.join(ROOT, '.cache', 'bench-quick')],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=TESTS_DIR))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@test(per_kernel=False)
def checkpatch_strict():
    """checkpatch --strict over the module and the selftests."""
    out = subprocess.run(['bash', os.path.join(ROOT, 'tests', 'setup', 'lint.sh')],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@test(matrix=True)
def build_w1_sparse(kernel):
    """The module builds with no W=1 or sparse warning."""
    build_module(kernel)


@test(matrix=True)
def bad_parameters_refuse_load(kernel):
    """Out-of-range parameters refuse the load and name the valid range."""
    with balloon_guest(kernel, 512) as g:
        for param, msg in (('page_order=11', 'page_order=11 is invalid: valid range is 0..10'),
                           ('page_order=64', 'page_order=64 is invalid'),
                           ('max_inflight=0', 'max_inflight=0 is invalid: valid range is 1..64'),
                           ('max_inflight=65', 'max_inflight=65 is invalid'),
                           ('inflate_workers=65',
                            'inflate_workers=65 is invalid: valid range is 0..64')):
            rc, out = g.run(f'insmod {MODULE} {param}')
            assert rc != 0, f'insmod {param} succeeded'
            assert msg in g.sh('dmesg'), f'no "{msg}" in dmesg'
            assert g.run('test -d /sys/module/virtio_balloon_hp')[0] != 0
        b = Balloon(g)
        b.load('page_order=9')
        assert b.stats()['page_order'] == 9


@test(matrix=True)
def inflate_deflate_exact(kernel):
    """Several targets, two not 2 MiB aligned: exact on both sides."""
    with balloon_guest(kernel, 2048) as g:
        b = Balloon(g)
        b.load()
        b.poll_guest_stats()
        for size in (1536 * MiB, 1024 * MiB, 1024 * MiB - 12 * 1024,
                     1024 * MiB + 8 * 1024, 2048 * MiB):
            secs = b.settle(size)
            g.log(f'guest size {size / MiB:.3f} MiB reached in {secs:.1f} s')
            b.check()
            s = b.stats()
            if size == 1024 * MiB:
                # Unfragmented guest: every block is a whole 2 MiB block.
                assert s['held_o9'] << 9 == s['current'], s
                assert s['fallbacks'] == 0, s
                want = g.meminfo()['MemTotal'] * 1024
                wait_until(lambda: b.guest_stats()['stats'].get('stat-total-memory'), 30,
                           f'host guest-stats stat-total-memory == {want}',
                           ok=lambda v: v == want)
            if size == 1024 * MiB - 12 * 1024:
                assert b.held_below(9) == 3, s
            if size == 1024 * MiB + 8 * 1024:
                # 5 pages out of o0 + o1 + 510 order-9 blocks: one split
                assert s['splits'] == 1 and b.held_below(9) == 510, s
        s = b.stats()
        # Stock QEMU offers no hp blocks: everything went as 4 KiB frames.
        assert s['hp_order'] == 0 and s['hp_inflate_buffers'] == 0, s
        assert s['inflate_pfns'] >= 1024 * MiB >> 12 and s['inflate_buffers'], s


@test
def deflate_on_oom_keeps_memtotal(kernel):
    """With DEFLATE_ON_OOM negotiated, ballooned memory stays in MemTotal."""
    with balloon_guest(kernel, 1024, deflate_on_oom=True) as g:
        b = Balloon(g)
        b.load()
        b.settle(512 * MiB)
        b.check()
        assert g.meminfo()['MemTotal'] == b.boot_kb
        b.settle(1024 * MiB)
        b.check()


def small_free_blocks(g):
    """Free blocks of orders 1 to 8 (above 0, below a pageblock) in the
    zones the balloon allocates from, as /proc/buddyinfo counts them: the
    count per order, and the 4 KiB frames in them all."""
    counts = [0] * 8
    for zone, free in g.buddyinfo().items():
        if zone in ('DMA32', 'Normal'):
            counts = [c + n for c, n in zip(counts, free[1:9])]
    return counts, sum(n << (order + 1) for order, n in enumerate(counts))


@test
def fragmented_guest_falls_back(kernel):
    """With no free 2 MiB block left the target is still met, in single
    pages, and the guest keeps most of its few free blocks of orders 1 to 8
    (at least half their frames), which its own allocations need (fork,
    page tables, slabs): the fallback goes from order 9 straight to order
    0, which takes single pages first."""
    fragmented_case(kernel, hp=False)


@test
def hp_fragmented_guest_mixes_queues(kernel):
    """Patched QEMU, fragmented guest: hp buffers and 4 KiB buffers both."""
    fragmented_case(kernel, hp=True)


def fragmented_case(kernel, hp):
    with balloon_guest(kernel, 1024, hp=hp) as g:
        b = Balloon(g)
        b.load()
        fragment(g)
        small = small_free_blocks(g)
        size = 1024 * MiB - 300 * MiB
        secs = b.settle(size)
        b.check()
        s = b.stats()
        left = small_free_blocks(g)
        g.log(f'300 MiB in {secs:.1f} s; {b.held_below(9) * 4096 // MiB} MiB below order 9, '
              f'{s["held_o9"] * 2} MiB in order 9, fallbacks {s["fallbacks"]}; free blocks '
              f'of orders 1-8: {small[0]} before ({small[1]} frames), {left[0]} after '
              f'({left[1]} frames)')
        assert s['fallbacks'] > 0, s
        assert b.held_below(9) * 4096 >= 64 * MiB, s
        # Walking down one order at a time, the balloon left 9% and 0% of
        # these frames (7.3, 2026-12-02), and on 7.3-debug no free block
        # above order 1: fork's order-3 stack could not be had and the OOM
        # killer ran.  Going straight to order 0 it keeps most of them, but
        # not all: the target takes nearly all free memory, and once the
        # movable single pages are gone the page allocator itself splits a
        # block of another migratetype, largest first.  Kept so far: 82% or
        # more (more than all when blocks merged), and 67% once in CI (one
        # order-8, one order-6 and one order-5 block gone), hence half,
        # which the old walk misses by far.
        assert small[1] >= 128, f'too few free blocks of orders 1-8 to judge: {small}'
        assert left[1] * 2 >= small[1], \
            f'the balloon took the free blocks of orders 1-8: {small} before, {left} after'
        if hp:
            hp_bufs = trace_count(g, 'virtio_balloon_hp_buffer', queue='hp_inflate')
            g.log(f'hp_inflate buffers {len(hp_bufs)} (host trace), '
                  f'inflate buffers {s["inflate_buffers"]}')
            assert hp_bufs and s['inflate_buffers'] > 0, s
            assert sum(int(r['pfns']) for r in hp_bufs) == s['held_o9'], s
        unfragment(g)
        b.settle(1024 * MiB)
        b.check()


@test
def target_beyond_guest(kernel):
    """A target larger than the guest can give: no OOM, no hang, recovers."""
    with balloon_guest(kernel, 1024) as g:
        b = Balloon(g)
        b.load()
        # It keeps trying: at least three stalled rounds, a second apart.
        held = b.fill(stalls=3, timeout=240)['current']
        assert b.actual() > 64 * MiB, b.actual()
        avail = g.meminfo()['MemAvailable']
        g.log(f'holds {held * 4096 / MiB:.0f} MiB of 960 asked; MemAvailable {avail} kB')
        assert g.sh('echo alive').strip() == 'alive'
        b.check(settled=False)
        b.settle(1024 * MiB)
        b.check()


def zoneinfo(g):
    """Per zone name (all nodes summed): free pages, high watermark, managed."""
    zones, cur = {}, None
    for line in g.sh('cat /proc/zoneinfo').splitlines():
        toks = line.replace(',', ' ').split()
        if toks[:1] == ['Node'] and len(toks) > 3:
            cur = zones.setdefault(toks[3], {'free': 0, 'high': 0, 'managed': 0})
        elif cur is not None and toks[:2] == ['pages', 'free']:
            cur['free'] += int(toks[2])
        elif cur is not None and len(toks) == 2 and toks[0] in ('high', 'managed'):
            cur[toks[0]] += int(toks[1])
    return zones


def reclaim_events(g):
    """Direct reclaim and compaction stalls so far (/proc/vmstat)."""
    return sum(n for k, n in g.vmstat().items()
               if k.startswith('allocstall_') or k in ('compact_stall', 'pgscan_direct'))


@test
def movable_zone_not_counted(kernel):
    """movablecore=3G on 4 GiB: the balloon never allocates from ZONE_MOVABLE,
    so the free memory there must not count toward its reserve.  Asked for
    nearly everything, it stops with the reserve still free above the high
    watermarks of the zones it takes from, and its retry rounds cause no
    direct reclaim or compaction."""
    with balloon_guest(kernel, 4096, append='movablecore=3G') as g:
        b = Balloon(g)
        b.load()
        reserve = b.stats()['reserve_pages']
        movable = zoneinfo(g).get('Movable', {'managed': 0})['managed']
        assert movable * 4096 >= 512 * MiB, f'no ZONE_MOVABLE to speak of: {zoneinfo(g)}'
        stalls = b.fill(stalls=2)['inflate_stalls']
        ev0 = reclaim_events(g)
        s = wait_until(b.stats, 60, '5 more inflate retry rounds',
                       ok=lambda s: s['inflate_stalls'] >= stalls + 5)
        ev = reclaim_events(g) - ev0
        z = zoneinfo(g)
        spare = sum(v['free'] - v['high'] for n, v in z.items() if n != 'Movable')
        g.log(f'balloon holds {s["current"] * 4096 // MiB} MiB; reserve '
              f'{reserve * 4096 // MiB} MiB; free above high watermark in the '
              f'other zones {spare * 4096 // MiB} MiB, free in Movable '
              f'{z["Movable"]["free"] * 4096 // MiB} MiB; direct reclaim/compaction '
              f'events in 5 retry rounds: {ev}')
        assert ev == 0, f'{ev} direct reclaim/compaction events while the balloon retried'
        assert spare >= reserve // 2, f'{spare} pages spare, reserve {reserve}: {z}'
        b.check(settled=False)
        b.settle(4096 * MiB)
        b.check()


@test
def target_moves_mid_flight(kernel):
    """The target changes while inflating and while deflating."""
    with balloon_guest(kernel, 2048) as g:
        b = Balloon(g)
        b.load()
        b.set_size(512 * MiB)
        seen = wait_between(b, 2048 * MiB, 512 * MiB)
        g.log(f'inflating: retargeted at {seen / MiB:.0f} MiB')
        b.settle(1280 * MiB)
        b.check()
        b.settle(512 * MiB)
        b.set_size(2048 * MiB)
        seen = wait_between(b, 512 * MiB, 2048 * MiB)
        g.log(f'deflating: retargeted at {seen / MiB:.0f} MiB')
        b.settle(1792 * MiB)
        b.check()


def wait_between(b, start, end):
    """Wait until the host sees a size strictly between start and end."""
    lo, hi = min(start, end), max(start, end)
    return wait_until(b.actual, 120, f'a size strictly between {lo} and {hi}',
                      ok=lambda a: lo < a < hi, interval=0.02)


@test(matrix=True)
def hp_blocks_one_pfn_per_block(kernel):
    """Patched QEMU: 2 GiB in at most 4 hp buffers, one discard per block."""
    with balloon_guest(kernel, 3072, hp=True) as g:
        b = Balloon(g)
        b.load()
        s = b.stats()
        assert s['hp_order'] == HP_ORDER, s
        secs = b.settle(1024 * MiB)
        b.check()
        blocks = (2048 * MiB) >> (12 + HP_ORDER)
        bufs = trace_count(g, 'virtio_balloon_hp_buffer', queue='hp_inflate')
        discards = trace_count(g, 'virtio_balloon_hp_inflate', order=HP_ORDER)
        s = b.stats()
        g.log(f'2 GiB inflated in {secs:.1f} s: {len(bufs)} hp_inflate buffers, '
              f'{len(discards)} block discards (host trace); guest counted '
              f'{s["hp_inflate_buffers"]} buffers, {s["inflate_buffers"]} 4 KiB buffers')
        assert 1 <= len(bufs) <= 4, bufs
        assert sum(int(r['pfns']) for r in bufs) == blocks, bufs
        assert len(discards) == blocks, len(discards)
        assert len({r['gpa'] for r in discards}) == blocks
        assert s['hp_inflate_buffers'] == len(bufs) and s['inflate_buffers'] == 0, s
        assert not trace_count(g, 'virtio_balloon_hp_reject')
        secs = b.settle(3072 * MiB)
        b.check()
        bufs = trace_count(g, 'virtio_balloon_hp_buffer', queue='hp_deflate')
        hints = trace_count(g, 'virtio_balloon_hp_deflate', order=HP_ORDER)
        g.log(f'deflated in {secs:.1f} s: {len(bufs)} hp_deflate buffers, {len(hints)} hints')
        assert 1 <= len(bufs) <= 4 and len(hints) == blocks, (bufs, len(hints))


@test
def hp_malformed_buffers_rejected(kernel):
    """Patched QEMU: misaligned and out-of-RAM hp blocks are refused, the
    host keeps serving good ones (test-hooks build)."""
    with balloon_guest(kernel, 1024, hp=True, hooks=True) as g:
        b = Balloon(g)
        b.load(module=HOOKS_MODULE)
        inject = '/sys/kernel/debug/virtio_balloon_hp_inject'
        beyond = (64 << 30) >> 12  # 64 GiB: 2 MiB aligned, far past RAM
        g.sh(f'echo hp_inflate 0x1 {beyond} > {inject}')
        g.sh(f'echo hp_deflate 0x201 > {inject}')
        rejects = trace_count(g, 'virtio_balloon_hp_reject')
        reasons = sorted((r['queue'], r['reason']) for r in rejects)
        g.log(f'host rejected: {reasons}')
        assert reasons == [('hp_deflate', 'misaligned'), ('hp_inflate', 'misaligned'),
                           ('hp_inflate', 'outside-guest-ram')], reasons
        assert g.run(f'echo hp_inflate zzz > {inject}')[0] != 0  # bad input: -EINVAL
        b.settle(512 * MiB)
        b.check()
        assert len(trace_count(g, 'virtio_balloon_hp_inflate')) == 256
        b.settle(1024 * MiB)
        b.check()


@test
def suspend_resume(kernel):
    """Suspend (s2idle, pm_test=devices) resets the device: the balloon
    empties through the host on freeze and refills on restore."""
    with balloon_guest(kernel, 2048) as g:
        b = Balloon(g)
        b.load()
        b.settle(1024 * MiB)
        suspend(g)
        events = [g.guest_size(e['data']['actual']) for e in g.qmp.events('BALLOON_CHANGE')]
        assert 2048 * MiB in events, events  # emptied before the reset
        wait_until(b.actual, 120, 'refilled after resume', ok=lambda a: a == 1024 * MiB)
        b.check()
        b.settle(2048 * MiB)
        b.check()


@test
def hibernate_restore(kernel):
    """Hibernation for real: the image goes to a swap disk, QEMU powers off,
    and a new QEMU on the same disk, given the same target before the guest
    runs, restores it.  The balloon empties through the host when the image
    is written and refills after the restore; MemTotal and actual agree."""
    with balloon_guest(kernel, 2048, swap_mib=1024) as g:
        b = Balloon(g)
        b.load()
        b.settle(1024 * MiB)
        before = b.stats()
        pid = g.sh('sleep 100000 >/dev/null 2>&1 & echo $!').strip()
        saved, restored = g.hibernate(lambda g: g.qmp.cmd('balloon', value=g.host_size(1024 * MiB)))
        g.log(f'image written and powered off in {saved:.1f} s, restored in {restored:.1f} s')
        assert g.run(f'kill -0 {pid}')[0] == 0, 'a process of the hibernated guest is gone'
        wait_until(b.actual, 120, 'refilled after restore', ok=lambda a: a == 1024 * MiB)
        b.settle(1024 * MiB)
        b.check()
        # The image holds the balloon as freeze left it, empty: the restored
        # kernel freed each block once and allocated it once again.
        s = b.stats()
        freed, refilled = (s[f'{k}_o9'] - before[f'{k}_o9'] for k in ('free', 'alloc'))
        g.log(f'after restore: {s["current"] >> 8} MiB ballooned, MemTotal '
              f'{g.meminfo()["MemTotal"] >> 10} MiB; {freed} blocks freed at freeze, '
              f'{refilled} allocated again')
        assert freed == refilled == 512, (freed, refilled)
        b.settle(2048 * MiB)
        b.check()


@test(matrix=True)
def rmmod_returns_everything(kernel):
    """rmmod with a full balloon: MemTotal exact, host sees all RAM again."""
    with balloon_guest(kernel, 2048) as g:
        b = Balloon(g)
        b.load()
        b.settle(1024 * MiB)
        t = time.monotonic()
        g.sh('rmmod virtio_balloon_hp')
        g.log(f'rmmod with 1 GiB ballooned took {time.monotonic() - t:.1f} s')
        assert g.meminfo()['MemTotal'] == b.boot_kb
        assert b.actual() == 2048 * MiB, b.actual()
        # The host still wants 1 GiB: a new probe inflates again.
        b.load()
        wait_until(b.actual, 240, 're-inflate after reload',
                   ok=lambda a: a == 1024 * MiB)
        b.settle(2048 * MiB)
        b.check()
