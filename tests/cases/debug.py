"""The debug tier's proof that it can fail (make check-debug): its checkers
report, and the harness flags their reports.  Run by tests/run_tests.py."""
from vbhp import wait_until
from vbhp.balloon import balloon_guest
from vbhp.runner import Skip, test


def reported(g, pattern):
    """Wait until a console line of a kernel problem holds @pattern; return it."""
    problems = wait_until(g.kernel_problems, 60, f'a kernel problem with {pattern!r}',
                          ok=lambda p: any(pattern in line for line in p), interval=1)
    return next(line for line in problems if pattern in line)


def leak_reported(g):
    """Scan with kmemleak until it reports a leak (it only suspects objects
    at least 5 s old); return the kernel problem it makes."""
    def scan():
        g.kmemleak_scan()
        return g.kernel_problems()
    problems = wait_until(scan, 120, 'a kmemleak report',
                          ok=lambda p: any(line.startswith('kmemleak: ') for line in p),
                          interval=5)
    return next(line for line in problems if line.startswith('kmemleak: '))


@test
def debug_reports_fail_a_run(kernel):
    """Debug kernel: a use-after-free provoked through LKDTM
    (READ_AFTER_FREE) comes out as a KASAN report, and the kernel's
    kmemleak sample module's leaks as kmemleak suspects; the harness flags
    both as kernel problems, as it would flag such a report caused by our
    module.  (The two are then forgotten, so that this test passes.  A later
    scan may suspect more of the sample's objects, ones a stale pointer
    still held at the first: those are expected, any other is not.)"""
    try:
        extra = [kernel.module('lkdtm'), kernel.module('kmemleak-test')]
    except FileNotFoundError:
        raise Skip('no lkdtm or kmemleak-test module: not a debug kernel (make check-debug)')
    with balloon_guest(kernel, 1024, extra_files=extra) as g:
        assert not g.kernel_problems(), g.kernel_problems()
        g.sh('insmod /lib/vbhp/lkdtm.ko')
        g.run('echo READ_AFTER_FREE > /sys/kernel/debug/provoke-crash/DIRECT')
        kasan = reported(g, 'KASAN')
        g.sh('insmod /lib/vbhp/kmemleak-test.ko')
        leak = leak_reported(g)
        g.log(f'flagged: {kasan.strip()}; {leak.strip()}')
        g.forget_problems()
        g.expect_leaks_in = 'kmemleak_test'
