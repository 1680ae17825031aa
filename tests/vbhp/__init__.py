"""Host-side test library for virtio_balloon_hp (stdlib only), shared by the
tests, the demo and the benchmark.

  kernels   the guest kernels set up in .cache/kernels.list
  build     the module and the kselftest programs built for a kernel
  qmp       QMP client
  guest     a QEMU guest with a serial shell agent; its kernel log checks
  balloon   the balloon of one guest, seen from the host and from the guest
  runner    @test registration and the TAP runner

This file holds what all of them use: the paths and wait_until.
"""
import os
import time

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS_DIR = os.path.join(ROOT, 'tests')
CACHE = os.path.join(ROOT, '.cache')


def wait_until(probe, timeout, what, ok=bool, interval=0.2):
    """Poll probe() until ok(value) holds; return that value. On timeout raise an
    AssertionError naming `what` and the last value seen. With the default ok,
    probe is a plain predicate."""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe()
        if ok(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}; last seen: {seen!r}')
        time.sleep(interval)
