"""Migration of ballooned pages: order-0 blocks sit on the kernel's balloon
list and move when compaction, CMA, memory offlining or a runtime huge page
allocation wants their frames; larger blocks stay put.  What that means for
huge page allocation is measured by bench/huge_pages.py.  Run by
tests/run_tests.py."""
from vbhp import MiB
from vbhp.balloon import Balloon, balloon_guest, fragment, unfragment
from vbhp.runner import test

COMPACT_TIMEOUT = 300  # s: a full compaction of a 1 GiB guest under TCG


TRACING = '/sys/kernel/tracing'
COMPACTION_END = f'{TRACING}/events/compaction/mm_compaction_end/enable'


def compact(g):
    """Compact every zone (synchronous: returns when it is done).  Returns
    where each zone's two scanners stopped, from the mm_compaction_end
    trace event where the kernel has it (tracefs is mounted where it is
    not: 7.3's debug build does not put it under debugfs)."""
    traced = g.run(f'mountpoint -q {TRACING} || mount -t tracefs tracefs {TRACING}; '
                   f'echo 1 > {COMPACTION_END} && echo > {TRACING}/trace')[0] == 0
    g.sh('echo 1 > /proc/sys/vm/compact_memory', timeout=COMPACT_TIMEOUT)
    if not traced:
        return 'not traced (no compaction trace events)'
    ends = g.sh(f"grep -o 'zone_start.*' {TRACING}/trace")
    g.sh(f'echo 0 > {COMPACTION_END}')
    return '; '.join(ends.splitlines())


HELD_TOP = 128  # MiB: the fragmenter's highest frames, free again for compaction


def compaction_case(kernel, order):
    """A fragmented 1 GiB guest takes 256 MiB of balloon at
    page_order=@order, so order-0 blocks fill the holes.  vbhp_fragment
    leaves its holes only in the low frames and holds its highest
    HELD_TOP MiB whole, so the ballooned pages lie below memory that is
    free once it exits: compaction's migration scanner, walking up from
    the zone's start, reaches them before it meets the free scanner
    wherever the kernel placed the fill.  A full compaction must then move
    ballooned pages (the kernel's balloon_migrate count and ours agree),
    with the host's actual, MemTotal and every count exact, also through a
    deflate and rmmod."""
    with balloon_guest(kernel, 1024) as g:
        b = Balloon(g)
        b.load(f'page_order={order}')
        fragment(g, held_top_mib=HELD_TOP)
        size = 768 * MiB
        b.settle(size)
        b.check()
        unfragment(g)
        vm0, s0 = g.vmstat(), b.stats()
        assert s0['held_o0'] > 0, f'no order-0 block to move: {s0}'
        scanners = compact(g)
        vm = g.vmstat()
        moved_vm = vm.get('balloon_migrate', 0) - vm0.get('balloon_migrate', 0)
        s = b.stats()
        moved = s.get('migrations', 0) - s0.get('migrations', 0)
        g.log(f'{s["held_o0"]} order-0 blocks held of {s["current"]} pages; compaction '
              f'moved {moved_vm} (vmstat balloon_migrate) of '
              f'{vm["compact_isolated"] - vm0["compact_isolated"]} pages isolated, '
              f'driver counted {moved}; busy {s.get("migrate_busy", 0)}; '
              f'inflate buffers +{s["inflate_buffers"] - s0["inflate_buffers"]}, '
              f'deflate buffers +{s["deflate_buffers"] - s0["deflate_buffers"]}; '
              f'scanners: {scanners}')
        assert moved_vm > 0, 'compaction moved no ballooned page'
        assert moved == moved_vm, f'driver counted {moved}, the kernel {moved_vm}'
        # Each migration is one inflate and one deflate of one frame.
        assert s['inflate_pfns'] - s0['inflate_pfns'] == moved, s
        assert s['deflate_pfns'] - s0['deflate_pfns'] == moved, s
        assert s['current'] == s0['current'], s
        assert s['held_o0'] == s0['held_o0'], s
        assert b.actual() == size, b.actual()
        b.check()
        b.settle(896 * MiB)
        b.check()
        g.sh('rmmod virtio_balloon_hp')
        assert g.meminfo()['MemTotal'] == b.boot_kb
        assert b.actual() == 1024 * MiB, b.actual()


@test
def order0_pages_migrate_on_compaction(kernel):
    """page_order=0: ballooned pages move when the guest compacts."""
    compaction_case(kernel, 0)


@test
def fallback_pages_migrate_on_compaction(kernel):
    """page_order=9 on a fragmented guest: its order-0 fallback blocks move."""
    compaction_case(kernel, 9)


OFFLINE_DEADLINE = 20  # s: offline_pages() retries until killed when a page cannot move


def offline_block(g, block):
    """Try to offline one memory block; 'offline', 'busy' (refused at once,
    an unmovable page), or 'stuck' (still migrating after the deadline, and
    killed: offline_pages() gives up only on a fatal signal)."""
    state = f'/sys/devices/system/memory/{block}/state'
    rc, out = g.run(f"timeout -s KILL {OFFLINE_DEADLINE} sh -c 'echo offline > {state}'",
                    timeout=OFFLINE_DEADLINE + 30)
    if rc == 0:
        return 'offline'
    return 'stuck' if rc in (124, 137) else 'busy'


@test
def small_blocks_let_memory_offline(kernel):
    """page_order=8 on stock QEMU: blocks below a pageblock are movable
    allocations (as every block below a pageblock is).  Held as
    order-0 pieces they migrate, so memory blocks that hold them go
    offline (two are tried for, from the top, each put back online before
    the next), the host told of every move; held whole, none of those
    went offline.  The balloon's counts stay exact throughout."""
    with balloon_guest(kernel, 1024) as g:
        b = Balloon(g)
        b.load('page_order=8')
        size = 640 * MiB  # 384 MiB ballooned: room left to move it into
        b.settle(size)
        b.check()
        s0 = b.stats()
        blocks = sorted(g.sh('ls /sys/devices/system/memory | grep ^memory').split(),
                        key=lambda name: int(name[len('memory'):]), reverse=True)
        seen, moved_out = [], 0
        for block in blocks[:-1]:  # memory0 holds the kernel
            if moved_out == 2:
                break
            before = b.stats()['migrations']
            state = offline_block(g, block)
            moved = b.stats()['migrations'] - before
            seen.append(f'{block} {state}, {moved} ballooned pages moved')
            if state == 'offline':
                # Back at once: each offline block takes 128 MiB the next
                # offline could migrate into, and running the guest out of
                # it prints allocation-failure traces.
                g.sh(f'echo online_kernel > /sys/devices/system/memory/{block}/state')
                moved_out += moved > 0
        g.log('; '.join(seen))
        s = b.stats()
        assert moved_out, f'no memory block holding ballooned pages went offline: {seen}'
        assert s0['held_o8'] == 0 and s0['held_o0'] == s0['current'], s0
        moved = s['migrations'] - s0['migrations']
        assert s['inflate_pfns'] - s0['inflate_pfns'] == moved, s
        assert s['deflate_pfns'] - s0['deflate_pfns'] == moved, s
        assert s['current'] == s0['current'] and b.actual() == size, (s, b.actual())
        b.check()
        b.settle(896 * MiB)
        b.check()
        g.sh('rmmod virtio_balloon_hp')
        assert g.meminfo()['MemTotal'] == b.boot_kb
