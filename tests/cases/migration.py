"""Migration of ballooned pages: order-0 blocks sit on the kernel's balloon
list and move when compaction, CMA, memory offlining or a runtime huge page
allocation wants their frames; larger blocks stay put.  Measured against the
in-tree virtio_balloon.  Run by tests/run_tests.py."""
from vbhp import MiB, wait_until
from vbhp.balloon import (INTREE_MODULE, MODULE, Balloon, balloon_guest, fragment, guest_files,
                          unfragment)
from vbhp.runner import test

HUGE_1G = '/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages'
HUGE_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'
COMPACT_TIMEOUT = 300  # s: a full compaction of a 1 GiB guest under TCG


def compact(g):
    """Compact every zone (synchronous: returns when it is done)."""
    g.sh('echo 1 > /proc/sys/vm/compact_memory', timeout=COMPACT_TIMEOUT)


def compaction_case(kernel, order):
    """A fragmented 1 GiB guest (vbhp_fragment holds every other page) takes
    256 MiB of balloon at page_order=@order, so order-0 blocks fill the
    holes; the fragmenter then exits and a full compaction must move
    ballooned pages (the kernel's balloon_migrate count and ours agree),
    with the host's actual, MemTotal and every count exact, also through a
    deflate and rmmod."""
    with balloon_guest(kernel, 1024) as g:
        b = Balloon(g)
        b.load(f'page_order={order}')
        fragment(g)
        size = 768 * MiB
        b.settle(size)
        b.check()
        unfragment(g)
        vm0, s0 = g.vmstat(), b.stats()
        assert s0['held_o0'] > 0, f'no order-0 block to move: {s0}'
        compact(g)
        vm = g.vmstat()
        moved_vm = vm.get('balloon_migrate', 0) - vm0.get('balloon_migrate', 0)
        s = b.stats()
        moved = s.get('migrations', 0) - s0.get('migrations', 0)
        g.log(f'{s["held_o0"]} order-0 blocks held of {s["current"]} pages; compaction '
              f'moved {moved_vm} (vmstat balloon_migrate) of '
              f'{vm["compact_isolated"] - vm0["compact_isolated"]} pages isolated, '
              f'driver counted {moved}; busy {s.get("migrate_busy", 0)}; '
              f'inflate buffers +{s["inflate_buffers"] - s0["inflate_buffers"]}, '
              f'deflate buffers +{s["deflate_buffers"] - s0["deflate_buffers"]}')
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


def huge_pages(g, path, want):
    """Ask for @want huge pages at @path, return how many the kernel got,
    then give them back."""
    g.sh(f'echo {want} > {path}', timeout=COMPACT_TIMEOUT)
    got = int(g.sh(f'cat {path}'))
    g.sh(f'echo 0 > {path}', timeout=COMPACT_TIMEOUT)
    return got


def huge_rates(kernel, files, module, params):
    """A 4 GiB guest (2 GiB below 4 GiB, 2 GiB above) with 1.5 GiB ballooned
    by @module: how many 1 GiB and 2 MiB huge pages a runtime allocation
    gets of how many it asked for, {'1G': (got, asked), '2M': (got, asked),
    'empty': 1 GiB pages got with nothing ballooned, of 2, 'moved':
    ballooned pages the kernel migrated meanwhile}.  It asks for as
    many as the free memory holds, less 256 MiB left to the guest."""
    ram, balloon = 4096 * MiB, 1536 * MiB
    with balloon_guest(kernel, ram // MiB, files=files) as g:
        b = Balloon(g)
        empty = huge_pages(g, HUGE_1G, 2)
        b.load(params, module=module)
        b.reach(ram - balloon)
        # In-tree or ours, the guest's MemTotal drops by the balloon.
        wait_until(lambda: g.meminfo()['MemTotal'], 30, 'MemTotal down by the balloon',
                   ok=lambda kb: kb == b.boot_kb - balloon // 1024)
        room = g.meminfo()['MemFree'] * 1024 - 256 * MiB
        ask_1g, ask_2m = room // (1024 * MiB), room // (2 * MiB)
        assert ask_1g >= 1, f'{room // MiB} MiB free: no room for a 1 GiB page'
        vm0 = g.vmstat().get('balloon_migrate', 0)
        res = {'empty': empty, '1G': (huge_pages(g, HUGE_1G, ask_1g), ask_1g),
               '2M': (huge_pages(g, HUGE_2M, ask_2m), ask_2m)}
        res['moved'] = g.vmstat().get('balloon_migrate', 0) - vm0
        assert b.actual() == ram - balloon, b.actual()
        return res


@test
def huge_pages_with_full_balloon(kernel):
    """Runtime 1 GiB and 2 MiB huge page allocation with 1.5 GiB of a 4 GiB
    guest ballooned: in-tree virtio_balloon, ours at page_order=0 (its
    pages migrate) and at page_order=9 (2 MiB blocks do not).  Figures for
    the record; page_order=0 must do about as well as the in-tree driver."""
    files = guest_files(kernel, extra=[kernel.module('virtio_balloon')])
    res = {}
    for name, module, params in (('in-tree', INTREE_MODULE, ''),
                                 ('ours o0', MODULE, 'page_order=0'),
                                 ('ours o9', MODULE, 'page_order=9')):
        r = res[name] = huge_rates(kernel, files, module, params)
        print(f'# {kernel.short}: {name}: 1 GiB pages {r["1G"][0]} of {r["1G"][1]} '
              f'({r["empty"]} of 2 before inflating), '
              f'2 MiB pages {r["2M"][0]} of {r["2M"][1]} '
              f'({100 * r["2M"][0] // r["2M"][1]}%); ballooned pages moved '
              f'{r["moved"]}', flush=True)
    intree, o0 = res['in-tree'], res['ours o0']
    assert o0['1G'][0] >= intree['1G'][0], res
    assert o0['2M'][0] >= intree['2M'][0] * 9 // 10, res
