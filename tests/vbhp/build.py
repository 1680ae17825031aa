"""Builds for a guest kernel: the module (tests/setup/build.sh) and the
in-guest kselftest programs."""
import os
import subprocess

from . import CACHE, TESTS_DIR

SELFTESTS = os.path.join(CACHE, 'build', 'selftests')


def build_module(kernel, variant=''):
    """Build (W=1, sparse) for @kernel; return the path of the .ko."""
    short = getattr(kernel, 'short', kernel)
    out = subprocess.run(['bash', os.path.join(TESTS_DIR, 'setup', 'build.sh'), short, variant],
                         capture_output=True, text=True)
    assert out.returncode == 0, f'build for {short} failed:\n{out.stderr}'
    return out.stdout.strip().splitlines()[-1]


def selftest_progs():
    """Paths of the built kselftest programs: TEST_GEN_PROGS and
    TEST_GEN_PROGS_EXTENDED of selftests/virtio_balloon_hp/Makefile, as
    build.sh (run by build_module) lists them."""
    with open(os.path.join(SELFTESTS, 'progs.list')) as f:
        return [os.path.join(SELFTESTS, os.path.basename(p)) for p in f.read().split()]
