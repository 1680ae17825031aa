#!/usr/bin/python3
"""End-to-end tests of virtio_balloon_hp: real guests under QEMU, both sides.

Usage: tests/run_tests.py [NAME-SUBSTRING ...]   (env VBHP_KERNELS="6.1 6.12 6.12-cloud 7.3")
Every test runs once per guest kernel and fails on any WARN, BUG, oops,
lockdep report or OOM message in that guest's kernel log.  The library is
tests/vbhp/, the tests are in tests/cases/.
"""
import sys

from cases import core, zeroing, boot, ondemand, reliability, stats, kselftest, hp_device, parity, hostpages, migration, guard, stress, debug  # noqa: F401  (importing registers the tests, in this order)
from vbhp.runner import main

if __name__ == '__main__':
    sys.exit(main())
