#!/usr/bin/python3
"""The shape of the parallel inflate: inflate rate against inflate_workers
and vCPUs, with init_on_alloc=1 (the guest zeroes what it balloons).

For each vCPU count, one 4 GiB guest on the reference host with hp blocks
(hp-block-order=9); for each inflate_workers value, the module is loaded,
3 GiB is inflated and deflated three times (rmmod in between), timed from
the QMP command to the host's actual.  Prints the median GiB/s per value
and its ratio to one worker.  Under TCG the vCPUs are threads of the
host: past the host's cores, more vCPUs only share them.
Usage: PYTHONPATH=tests bench/workers.py [KERNEL]
"""
import statistics
import sys

from vbhp import MiB
from vbhp.balloon import Balloon, balloon_guest
from vbhp.kernels import kernels

RAM = 4096 * MiB
SMALL = 1024 * MiB
SHAPES = ((2, (1, 2)), (4, (1, 2, 4)))  # vCPUs, inflate_workers values
RUNS = 3


def main():
    kernel = sys.argv[1] if len(sys.argv) > 1 else kernels()[0].short
    for smp, workers in SHAPES:
        with balloon_guest(kernel, RAM // MiB, hp=True, smp=smp, append='init_on_alloc=1') as g:
            print(f'kernel {kernel}, {smp} vCPUs, init_on_alloc=1: 3 GiB of 4 GiB in hp blocks, '
                  f'median of {RUNS}', flush=True)
            one = None
            for n in workers:
                b = Balloon(g)
                b.load(f'page_order=9 inflate_workers={n}')
                rates = []
                for _ in range(RUNS):
                    rates.append(3 / b.reach(SMALL, 300, interval=0.01))
                    b.reach(RAM, 300, interval=0.01)
                g.sh('rmmod virtio_balloon_hp')
                rate = statistics.median(rates)
                one = one or rate
                print(f'  inflate_workers={n}: {rate:4.2f} GiB/s ({rate / one:4.2f}x one worker)',
                      flush=True)


if __name__ == '__main__':
    main()
