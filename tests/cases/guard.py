"""The guard host (issue 10): the reference host with guard=on unmaps every
hp block (order 9) from its inflate to its deflate, so a touch of ballooned
memory by the guest or by QEMU kills QEMU with SIGSEGV (host/README.md).
Each test here runs a balloon path on it and checks that QEMU is still
alive and that the host's count of guarded blocks is what the guest holds;
the last one shows that a touch is caught.  Run by tests/run_tests.py."""
import base64
import re
import signal
import struct
import time

from vbhp import MiB, wait_until
from vbhp.balloon import (HOOKS_MODULE, Balloon, balloon_guest, check_guard, guarded_gpas,
                          suspend, trace_count, use_freed_memory)
from vbhp.runner import test

TOUCH = '/sys/kernel/debug/virtio_balloon_hp_touch'  # test-hooks build
BLOCK = 2 * MiB


@test
def guard_inflate_deflate_exact(kernel):
    """Guard host: targets, two not 2 MiB aligned, are met exactly; each
    held 2 MiB block is guarded, each deflated one mapped again before the
    guest reuses it.  The step from 512 MiB - 12 KiB to 512 MiB + 8 KiB
    deflates 4 KiB frames out of a split guarded block: the host maps that
    whole block again (the guest no longer holds it whole)."""
    with balloon_guest(kernel, 1024, guard=True) as g:
        b = Balloon(g)
        b.load()
        for size in (512 * MiB, 768 * MiB, 512 * MiB - 12 * 1024, 512 * MiB + 8 * 1024,
                     1024 * MiB):
            secs = b.settle(size)
            b.check()
            n = check_guard(g, b)
            g.log(f'{size / MiB:.3f} MiB reached in {secs:.1f} s; {n} blocks guarded')
            if size == 512 * MiB + 8 * 1024:
                assert b.stats()['splits'] == 1, b.stats()
        assert n == 0
        ops = [r['op'] for r in trace_count(g, 'virtio_balloon_hp_guard')]
        g.log(f'{ops.count("protect")} protects, {ops.count("unprotect")} unprotects')
        assert ops.count('protect') >= 256, ops.count('protect')
        use_freed_memory(g, b, 700)


@test
def guard_on_demand_deflate(kernel):
    """Guard host with deflate-on-oom: a program needing memory the balloon
    holds gets it through the shrinker; every block given back was mapped
    again before the program touched it."""
    with balloon_guest(kernel, 1024, guard=True, deflate_on_oom=True) as g:
        b = Balloon(g)
        b.load()
        b.fill()
        before = check_guard(g, b)
        rc, out = g.run('vbhp_alloc -m 512', timeout=300)
        assert rc == 0, out
        s = b.stats()
        od = sum(s[f'od_{t}_pages'] for t in ('shrinker', 'oom', 'ioctl'))
        after = check_guard(g, b)
        g.log(f'guarded blocks {before} -> {after}; deflated on demand {od * 4096 // MiB} MiB')
        assert od and after < before, (od, before, after)
        b.settle(1024 * MiB)
        assert check_guard(g, b) == 0


@test
def guard_suspend(kernel):
    """Guard host: suspend empties the balloon through the host (every block
    mapped again) and resume refills it (guarded again)."""
    with balloon_guest(kernel, 1024, guard=True) as g:
        b = Balloon(g)
        b.load()
        b.settle(512 * MiB)
        before = check_guard(g, b)
        suspend(g)
        wait_until(b.actual, 120, 'refilled after resume', ok=lambda a: a == 512 * MiB)
        wait_until(b.stats, 30, 'nothing in flight',
                   ok=lambda s: not s['inflate_inflight'] and not s['deflate_inflight'])
        ops = [r['op'] for r in trace_count(g, 'virtio_balloon_hp_guard')]
        g.log(f'{before} blocks guarded before suspend; {ops.count("unprotect")} unprotected '
              f'and {ops.count("protect") - before} guarded again across it')
        assert ops.count('unprotect') >= before
        assert check_guard(g, b) == before
        b.check()
        b.settle(1024 * MiB)
        use_freed_memory(g, b, 700)


@test
def guard_rmmod(kernel):
    """Guard host: rmmod with 512 MiB ballooned maps every block again
    before the guest gets it back, and the guest can use all of it."""
    with balloon_guest(kernel, 1024, guard=True) as g:
        b = Balloon(g)
        b.load()
        b.settle(512 * MiB)
        before = check_guard(g, b)
        t = time.monotonic()
        g.sh('rmmod virtio_balloon_hp')
        g.log(f'rmmod with {before} guarded blocks took {time.monotonic() - t:.1f} s')
        assert g.meminfo()['MemTotal'] == b.boot_kb
        assert b.actual() == 1024 * MiB, b.actual()
        left = guarded_gpas(g)
        assert not left, f'{len(left)} blocks still guarded after rmmod'
        rc, out = g.run('vbhp_alloc -m 700', timeout=180)
        assert rc == 0 and g.proc.poll() is None, out


def kcore_ram(g):
    """The PT_LOAD segments of the guest's /proc/kcore that map RAM, as
    (file offset, physical address, size): those with a physical address
    (the others have -1) that are not the kernel text mapping (at or above
    __START_KERNEL_map).  Only the headers are read, not the file."""
    raw = base64.b64decode(g.sh('dd if=/proc/kcore bs=4096 count=16 2>/dev/null | base64'))
    assert raw[:5] == b'\x7fELF\x02', raw[:16]
    phoff, = struct.unpack_from('<Q', raw, 32)
    phentsize, phnum = struct.unpack_from('<HH', raw, 54)
    segs = []
    for i in range(phnum):
        ptype, _, off, vaddr, paddr, size = struct.unpack_from('<IIQQQQ', raw, phoff + i * phentsize)
        if ptype == 1 and paddr != (1 << 64) - 1 and vaddr < 0xffffffff80000000:
            segs.append((off, paddr, size))
    return segs


def kcore_dd(off, size, bs):
    return f'dd if=/proc/kcore bs={bs} iflag=skip_bytes,count_bytes skip={off} count={size}'


def kcore_read(g, off, size):
    """Read @size bytes of /proc/kcore at @off in the guest, into /dev/null
    (a pipe costs ten times more under TCG) in blocks that divide @size, so
    that dd's record count says whether all of it was read."""
    bs = min(size & -size, 4 * MiB)
    out = g.sh(kcore_dd(off, size, bs) + ' of=/dev/null 2>&1', timeout=300)
    assert f'{size // bs}+0 records out' in out, f'short read of {size} bytes: {out}'


def kcore_nonzero(g, off, size):
    """How many of the @size bytes of /proc/kcore at @off are not zero."""
    read, nonzero = g.sh(kcore_dd(off, size, '1M') + " of=/tmp/kcore.blk 2>/dev/null && "
                         "wc -c </tmp/kcore.blk && tr -d '\\000' </tmp/kcore.blk | wc -c; "
                         "rm -f /tmp/kcore.blk").split()
    assert int(read) == size, f'read {read} of {size} bytes'
    return int(nonzero)


@test
def guard_kcore_skips_offline(kernel):
    """Guard host: a /proc/kcore reader reads every RAM segment while the
    balloon holds 512 MiB.  The kernel must skip the ballooned frames (the
    driver marks them PageOffline); reading one would kill QEMU.  A
    ballooned block reads as zeros through kcore.  kdump, the other reader
    that must skip them, needs kexec and a crash kernel, which these
    busybox initramfs guests do not have: it is not tested here."""
    with balloon_guest(kernel, 1024, guard=True) as g:
        b = Balloon(g)
        b.load()
        b.settle(512 * MiB)
        gpas = guarded_gpas(g)
        assert len(gpas) == check_guard(g, b) == 256
        segs = kcore_ram(g)
        total = sum(size for _, _, size in segs)
        inside = [a for a in gpas if any(p <= a < p + s for _, p, s in segs)]
        g.log(f'{len(segs)} RAM segments, {total // MiB} MiB; '
              f'{len(inside)} of {len(gpas)} guarded blocks inside them')
        assert total >= 900 * MiB and len(inside) == len(gpas), (segs, len(inside))
        t = time.monotonic()
        for off, _, size in segs:
            kcore_read(g, off, size)
        g.log(f'read {total // MiB} MiB of RAM through /proc/kcore in '
              f'{time.monotonic() - t:.1f} s; QEMU alive')
        gpa = min(gpas)
        off, paddr, _ = next(s for s in segs if s[1] <= gpa < s[1] + s[2])
        nonzero = kcore_nonzero(g, off + gpa - paddr, BLOCK)
        assert nonzero == 0, f'ballooned block at {gpa:#x}: {nonzero} bytes not zero'
        check_guard(g, b)
        b.settle(1024 * MiB)
        b.check()


def touch_ballooned(g):
    """Hold 256 MiB and have the test-hooks build read one ballooned byte
    (QEMU alive until then); return the guest agent's error if the read
    never returned, else None."""
    b = Balloon(g)
    b.load(module=HOOKS_MODULE)
    b.settle(768 * MiB)
    assert check_guard(g, b) == (128 if g.host.guard else 0)
    try:
        g.sh(f'echo read > {TOUCH}', timeout=30)
    except (ConnectionError, TimeoutError) as e:
        return e
    return None


@test
def guard_catches_a_touch(kernel):
    """The guard works: a driver that reads one ballooned byte (the
    test-hooks build's _touch) kills QEMU with SIGSEGV on the guard host, so
    the run fails; the same read on the hp host without the guard returns
    and QEMU lives on."""
    with balloon_guest(kernel, 1024, hp=True, hooks=True) as g:
        err = touch_ballooned(g)
        assert err is None and g.proc.poll() is None, f'no guard, yet: {err}'
        m = re.search(r'test hook: ballooned pfn (0x[0-9a-f]+) holds (\S+)', g.sh('dmesg'))
        assert m, 'the touch did not happen'
        g.log(f'no guard: read ballooned pfn {m.group(1)}: {m.group(2)}; QEMU alive')
    with balloon_guest(kernel, 1024, guard=True, hooks=True) as g:
        err = touch_ballooned(g)
        rc = wait_until(g.proc.poll, 30, 'QEMU to die of the touch',
                        ok=lambda rc: rc is not None)
        shown = 'test hook: read ballooned pfn' in g.console()
        g.log(f'guard: QEMU exited with {rc}; guest agent: {err}; '
              f'hook message on the console: {shown}')
        assert rc == -signal.SIGSEGV, f'QEMU exit {rc}, want SIGSEGV ({-signal.SIGSEGV})'
