"""Builds for a guest kernel: the module (tests/setup/build.sh) and the
in-guest kselftest programs."""
import os
import subprocess

from . import CACHE, TESTS_DIR

SELFTESTS = os.path.join(CACHE, 'build', 'selftests')
SELFTEST_PROGS = ('vbhp_check', 'vbhp_fragment', 'vbhp_ioctl', 'vbhp_alloc')


def build_module(kernel, variant=''):
    """Build (W=1, sparse) for @kernel; return the path of the .ko."""
    short = getattr(kernel, 'short', kernel)
    out = subprocess.run(['bash', os.path.join(TESTS_DIR, 'setup', 'build.sh'), short, variant],
                         capture_output=True, text=True)
    assert out.returncode == 0, f'build for {short} failed:\n{out.stderr}'
    return out.stdout.strip().splitlines()[-1]
