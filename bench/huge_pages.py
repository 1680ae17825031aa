#!/usr/bin/python3
"""Runtime huge page allocation with a large balloon: what it costs that
only order-0 ballooned pages can migrate.

A guest (by default 8 GiB: 2 GiB below 4 GiB, 6 GiB above) holds part of
its memory (by default 3 GiB) in the balloon of the in-tree
virtio_balloon, of virtio_balloon_hp at page_order=0 (its pages migrate
through the kernel's balloon API) and at page_order=9 (2 MiB blocks do
not migrate); then the guest asks for as many 1 GiB and 2 MiB huge pages
(nr_hugepages) as its free memory holds, less 256 MiB.  Prints how many
it got of how many it asked, per driver, how many 1 GiB pages the same
guest got before the balloon inflated, and how many ballooned pages the
kernel moved meanwhile (vmstat balloon_migrate).  Stock QEMU.

A 1 GiB page needs a naturally aligned GiB with no unmovable page in it.
Early boot allocations sit at the top of RAM (memblock allocates top
down) and the rest of the kernel's memory lands anywhere, so a 4 GiB
guest (two such GiBs above 4 GiB) got none even with an empty balloon:
the default guest is larger so that the empty balloon's figure is not 0.

Usage: PYTHONPATH=tests bench/huge_pages.py [--kernel SHORT] [--ram-gib N] [--balloon-gib N]
"""
import argparse

from vbhp import MiB, wait_until
from vbhp.balloon import INTREE_MODULE, MODULE, Balloon, balloon_guest, guest_files
from vbhp.kernels import kernels

HUGE_1G = '/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages'
HUGE_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'
HUGE_TIMEOUT = 300  # s: an allocation that compacts a 4 GiB guest under TCG


def huge_pages(g, path, want):
    """Ask for @want huge pages at @path, return how many the kernel got,
    then give them back."""
    g.sh(f'echo {want} > {path}', timeout=HUGE_TIMEOUT)
    got = int(g.sh(f'cat {path}'))
    g.sh(f'echo 0 > {path}', timeout=HUGE_TIMEOUT)
    return got


def free_room(g):
    """Bytes a huge page allocation may take: free memory less 256 MiB."""
    return g.meminfo()['MemFree'] * 1024 - 256 * MiB


def huge_rates(kernel, files, module, params, ram, balloon):
    """A guest of @ram bytes with @balloon bytes ballooned by @module: how
    many 1 GiB and 2 MiB huge pages a runtime allocation gets of how many
    it asked for, {'1G': (got, asked), '2M': (got, asked), 'empty': (got,
    asked) 1 GiB pages with nothing ballooned, 'moved': ballooned pages
    the kernel migrated meanwhile}.  It asks for as many as the free
    memory holds, less 256 MiB left to the guest."""
    with balloon_guest(kernel, ram // MiB, files=files) as g:
        b = Balloon(g)
        ask = free_room(g) // (1024 * MiB)
        empty = (huge_pages(g, HUGE_1G, ask), ask)
        b.load(params, module=module)
        b.reach(ram - balloon)
        # In-tree or ours, the guest's MemTotal drops by the balloon.
        wait_until(lambda: g.meminfo()['MemTotal'], 30, 'MemTotal down by the balloon',
                   ok=lambda kb: kb == b.boot_kb - balloon // 1024)
        room = free_room(g)
        ask_1g, ask_2m = room // (1024 * MiB), room // (2 * MiB)
        assert ask_1g >= 1, f'{room // MiB} MiB free: no room for a 1 GiB page'
        vm0 = g.vmstat().get('balloon_migrate', 0)
        res = {'empty': empty, '1G': (huge_pages(g, HUGE_1G, ask_1g), ask_1g),
               '2M': (huge_pages(g, HUGE_2M, ask_2m), ask_2m)}
        res['moved'] = g.vmstat().get('balloon_migrate', 0) - vm0
        assert b.actual() == ram - balloon, b.actual()
        return res


def measure(kernel, ram, balloon):
    """Every driver's figures on @kernel, printed as they come."""
    files = guest_files(kernel, extra=[kernel.module('virtio_balloon')])
    res = {}
    for name, module, params in (('in-tree', INTREE_MODULE, ''),
                                 ('ours o0', MODULE, 'page_order=0'),
                                 ('ours o9', MODULE, 'page_order=9')):
        r = res[name] = huge_rates(kernel, files, module, params, ram, balloon)
        print(f'{kernel.short}: {name}: 1 GiB pages {r["1G"][0]} of {r["1G"][1]} '
              f'({r["empty"][0]} of {r["empty"][1]} before inflating), '
              f'2 MiB pages {r["2M"][0]} of {r["2M"][1]} '
              f'({100 * r["2M"][0] // r["2M"][1]}%); ballooned pages moved '
              f'{r["moved"]}', flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kernel', help='kernel short name (default: every kernel)')
    ap.add_argument('--ram-gib', type=int, default=8, help='guest RAM (default 8)')
    ap.add_argument('--balloon-gib', type=int, default=3, help='ballooned (default 3)')
    args = ap.parse_args()
    print(f'# {args.ram_gib} GiB guests, {args.balloon_gib} GiB ballooned', flush=True)
    for kernel in kernels():
        if not args.kernel or kernel.short == args.kernel:
            measure(kernel, args.ram_gib * 1024 * MiB, args.balloon_gib * 1024 * MiB)


if __name__ == '__main__':
    main()
