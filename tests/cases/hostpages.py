"""Host huge pages: a guest whose RAM the host backs with 2 MiB hugetlb
pages gets whole host pages freed when it inflates.  Measured on the host:
the free pages of its 2 MiB hugetlb pool.  Run by tests/run_tests.py."""
import contextlib

from vbhp import MiB
from vbhp.balloon import INTREE_MODULE, Balloon, balloon_guest
from vbhp.hosts import hugetlb_free, hugetlb_pool
from vbhp.runner import Skip, test

RAM_MIB = 2048
TOUCH_MIB = 1600  # what the guest touches (and frees) before each inflate
BALLOON_MIB = 1024
HUGE = 2 * MiB


@contextlib.contextmanager
def hugetlb_guest(kernel, hp=False):
    """A RAM_MIB guest backed by host hugetlb pages, with the in-tree driver
    on board; the host's pool grows for it and shrinks back after."""
    pages = (RAM_MIB + kernel.checker_overhead_mib(RAM_MIB)) * MiB // HUGE  # QEMU's whole RAM
    with hugetlb_pool(pages) as added:
        if added < pages:
            raise Skip(f'the host could add only {added} of {pages} 2 MiB pages to its pool')
        with balloon_guest(kernel, RAM_MIB, hp=hp, hugetlb=True,
                           extra_files=[kernel.module('virtio_balloon')]) as g:
            yield g


def touch(g):
    """The guest touches TOUCH_MIB and frees it: the host backs that much."""
    before = hugetlb_free()
    out = g.sh(f'vbhp_alloc -m {TOUCH_MIB}', timeout=300)
    backed = (before - hugetlb_free()) * HUGE
    g.log(f'{out.strip()}; the host backed {backed // MiB} MiB more with huge pages')


def inflate_freed(g, load, settle):
    """Touch, load a driver, inflate BALLOON_MIB; return the MiB of host
    huge pages the inflate freed."""
    touch(g)
    free0 = hugetlb_free()
    load()
    secs = settle((RAM_MIB - BALLOON_MIB) * MiB)
    freed = (hugetlb_free() - free0) * HUGE // MiB
    return freed, secs


def hp_blocks_freed(g, b, label, params):
    """inflate_freed() with our driver and @params; logs the figure."""
    freed, secs = inflate_freed(g, lambda: b.load(params), b.settle)
    s = b.stats()
    g.log(f'{label} ({params}): {freed} of {BALLOON_MIB} MiB ballooned came back as host '
          f'huge pages (inflate {secs:.1f} s; {s["inflate_buffers"]} 4 KiB buffers of '
          f'{s["inflate_pfns"] // max(s["inflate_buffers"], 1)} frames on average, '
          f'{s["hp_inflate_buffers"]} hp buffers)')
    return freed, s


@test
def hugetlb_host_gets_huge_pages_back(kernel):
    """Stock QEMU, guest RAM on host 2 MiB hugetlb pages: QEMU frees a host
    page only when one buffer names all its 512 frames.  In-tree driver
    (256 frames a buffer): a figure only.  Ours by default (whole_blocks=1):
    at least 95% of the ballooned memory comes back as free host huge
    pages; deflate and touching the memory again work."""
    with hugetlb_guest(kernel) as g:
        b = Balloon(g)
        freed, secs = inflate_freed(g, lambda: b.load('', module=INTREE_MODULE), b.reach)
        g.log(f'in-tree virtio_balloon: {freed} of {BALLOON_MIB} MiB ballooned came back '
              f'as host huge pages (inflate {secs:.1f} s)')
        b.reach(RAM_MIB * MiB)
        g.sh('rmmod virtio_balloon')

        freed, s = hp_blocks_freed(g, b, 'virtio_balloon_hp by default', 'page_order=9')
        assert freed >= BALLOON_MIB * 95 // 100, \
            f'only {freed} of {BALLOON_MIB} MiB ballooned came back as host huge pages'
        assert s['whole_blocks'] == 1 and s['hp_inflate_buffers'] == 0, s
        b.check()
        # Deflate: QEMU only hints the host pages (MADV_WILLNEED, nothing for
        # hugetlb); the guest's next touch faults them back in from the pool.
        free1 = hugetlb_free()
        b.settle(RAM_MIB * MiB)
        b.check()
        free2 = hugetlb_free()
        touch(g)
        g.log(f'deflate: the pool went {free1} -> {free2} free pages, '
              f'{hugetlb_free()} after the guest touched {TOUCH_MIB} MiB again')


@test
def hp_hugetlb_blocks_free_host_pages(kernel):
    """The reference host (hp blocks of 2 MiB), guest RAM on host 2 MiB
    hugetlb pages: every hp block discards a whole host page."""
    with hugetlb_guest(kernel, hp=True) as g:
        b = Balloon(g)
        freed, s = hp_blocks_freed(g, b, 'virtio_balloon_hp on the reference host',
                                   'page_order=9')
        assert s['hp_order'] == 9 and s['hp_inflate_buffers'] > 0, s
        assert freed >= BALLOON_MIB * 95 // 100, \
            f'only {freed} of {BALLOON_MIB} MiB ballooned came back as host huge pages'
        b.check()
