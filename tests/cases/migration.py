"""Migration of ballooned pages: order-0 blocks sit on the kernel's balloon
list and move when compaction, CMA, memory offlining or a runtime huge page
allocation wants their frames; larger blocks stay put.  Measured against the
in-tree virtio_balloon.  Run by tests/run_tests.py."""
from vbhp import MiB, wait_until
from vbhp.balloon import INTREE_MODULE, MODULE, Balloon, balloon_guest, guest_files
from vbhp.runner import test

HUGE_1G = '/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages'
HUGE_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'
COMPACT_TIMEOUT = 300  # s: a full compaction of a 1 GiB guest under TCG


def compact(g):
    """Compact every zone (synchronous: returns when it is done)."""
    g.sh('echo 1 > /proc/sys/vm/compact_memory', timeout=COMPACT_TIMEOUT)


@test
def order0_pages_migrate_on_compaction(kernel):
    """page_order=0 fills half the guest; a full compaction then moves
    ballooned pages (the kernel's balloon_migrate count and ours agree),
    and the host's actual, MemTotal and every count stay exact, also
    through a deflate and rmmod."""
    with balloon_guest(kernel, 1024) as g:
        b = Balloon(g)
        b.load('page_order=0')
        size = 512 * MiB
        b.settle(size)
        b.check()
        vm0, s0 = g.vmstat().get('balloon_migrate', 0), b.stats()
        compact(g)
        moved_vm = g.vmstat().get('balloon_migrate', 0) - vm0
        s = b.stats()
        moved = s.get('migrations', 0) - s0.get('migrations', 0)
        g.log(f'compaction moved {moved_vm} ballooned pages (vmstat balloon_migrate), '
              f'driver counted {moved}; busy {s.get("migrate_busy", 0)}; '
              f'inflate buffers +{s["inflate_buffers"] - s0["inflate_buffers"]}, '
              f'deflate buffers +{s["deflate_buffers"] - s0["deflate_buffers"]}')
        assert moved_vm > 0, 'compaction moved no ballooned page'
        assert moved == moved_vm, f'driver counted {moved}, the kernel {moved_vm}'
        # Each migration is one inflate and one deflate buffer of one frame.
        assert s['inflate_pfns'] - s0['inflate_pfns'] == moved, s
        assert s['deflate_pfns'] - s0['deflate_pfns'] == moved, s
        assert s['current'] == s0['current'] == s['held_o0'], s
        assert b.actual() == size, b.actual()
        b.check()
        b.settle(768 * MiB)
        b.check()
        g.sh('rmmod virtio_balloon_hp')
        assert g.meminfo()['MemTotal'] == b.boot_kb
        assert b.actual() == 1024 * MiB, b.actual()


def huge_pages(g, path, want):
    """Ask for @want huge pages at @path, return how many the kernel got,
    then give them back."""
    g.sh(f'echo {want} > {path}', timeout=COMPACT_TIMEOUT)
    got = int(g.sh(f'cat {path}'))
    g.sh(f'echo 0 > {path}', timeout=COMPACT_TIMEOUT)
    return got


def huge_rates(kernel, files, module, params):
    """A 3 GiB guest with half its memory ballooned by @module: how many
    1 GiB and 2 MiB huge pages a runtime allocation gets, and of how many
    the free memory could hold: {'1G': (got, fit), '2M': (got, fit)}."""
    ram = 3072
    with balloon_guest(kernel, ram, files=files) as g:
        b = Balloon(g)
        b.load(params, module=module)
        b.reach(ram * MiB // 2)
        # In-tree or ours, the guest's MemTotal drops by the balloon.
        wait_until(lambda: g.meminfo()['MemTotal'], 30, 'MemTotal down by the balloon',
                   ok=lambda kb: kb <= b.boot_kb - ram * 1024 // 2)
        free = g.meminfo()['MemFree'] * 1024
        fit_1g, fit_2m = free // (1024 * MiB), free // (2 * MiB)
        got_1g = huge_pages(g, HUGE_1G, 2)
        got_2m = huge_pages(g, HUGE_2M, fit_2m)
        return {'1G': (got_1g, fit_1g), '2M': (got_2m, fit_2m)}


@test
def huge_pages_with_full_balloon(kernel):
    """Runtime 1 GiB and 2 MiB huge page allocation with half of a 3 GiB
    guest ballooned: in-tree virtio_balloon, ours at page_order=0 (migrates)
    and at page_order=9 (2 MiB blocks do not).  Figures for the record;
    page_order=0 must do about as well as the in-tree driver."""
    files = guest_files(kernel, extra=[kernel.module('virtio_balloon')])
    res = {}
    for name, module, params in (('in-tree', INTREE_MODULE, ''),
                                 ('ours o0', MODULE, 'page_order=0'),
                                 ('ours o9', MODULE, 'page_order=9')):
        res[name] = huge_rates(kernel, files, module, params)
        r = res[name]
        print(f'# {kernel.short}: {name:8}: 1 GiB pages {r["1G"][0]}/{r["1G"][1]}, '
              f'2 MiB pages {r["2M"][0]}/{r["2M"][1]} '
              f'({100 * r["2M"][0] // max(r["2M"][1], 1)}%)', flush=True)
    intree, o0 = res['in-tree'], res['ours o0']
    assert o0['1G'][0] >= intree['1G'][0], res
    assert o0['2M'][0] >= intree['2M'][0] * 9 // 10, res
