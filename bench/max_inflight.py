#!/usr/bin/python3
"""How many buffers in flight pay off: the measurement behind max_inflight's default.

Boots one guest per init_on_alloc setting and, for each max_inflight value,
loads the module, inflates 3 GiB of 4 GiB and deflates it again (rmmod in
between), timing each from the QMP command to the host's actual reaching the
target.  Prints median seconds of 3 runs per value.
Usage: PYTHONPATH=tests bench/max_inflight.py [KERNEL]
"""
import statistics
import sys

from vbhp import MiB
from vbhp.balloon import Balloon, balloon_guest
from vbhp.kernels import kernels

RAM = 4096 * MiB
SMALL = 1024 * MiB
VALUES = (1, 2, 4, 8, 16, 32)
RUNS = 3


def main():
    kernel = sys.argv[1] if len(sys.argv) > 1 else kernels()[0].short
    for init in (1, 0):
        with balloon_guest(kernel, RAM // MiB, append=f'init_on_alloc={init}') as g:
            print(f'kernel {kernel}, init_on_alloc={init}: 3 GiB of 4 GiB, median of {RUNS}')
            for n in VALUES:
                inf, dfl = [], []
                b = Balloon(g)
                b.load(f'page_order=9 max_inflight={n}')
                for _ in range(RUNS):
                    inf.append(b.reach(SMALL, 300, interval=0.01))
                    dfl.append(b.reach(RAM, 300, interval=0.01))
                g.sh('rmmod virtio_balloon_hp')
                print(f'  max_inflight={n:2}: inflate {statistics.median(inf):5.2f} s '
                      f'({3 / statistics.median(inf):4.2f} GiB/s)  deflate '
                      f'{statistics.median(dfl):5.2f} s ({3 / statistics.median(dfl):4.2f} GiB/s)',
                      flush=True)


if __name__ == '__main__':
    main()
