"""The TAP test runner: @test registers a test, main() runs the chosen ones
on each selected kernel and checks every guest a test started."""
import os
import shutil
import sys
import time
import traceback

from . import ROOT
from .guest import started_guests
from .kernels import full_kernel, kernels

_tests = []


class Skip(Exception):
    """Raise in a test to skip it (with a reason)."""


def test(fn=None, per_kernel=True, matrix=False):
    """Register a test.  @test: fn(kernel) runs once per selected kernel that
    runs the whole suite (kernels.full_kernel); @test(matrix=True): on every
    selected kernel (the set each supported kernel must pass: build, load,
    exact inflate/deflate on both hosts, rmmod, the kselftests);
    @test(per_kernel=False): fn() runs once."""
    def register(fn):
        fn.per_kernel = per_kernel
        fn.matrix = matrix
        _tests.append(fn)
        return fn
    return register(fn) if fn else register


def _run_one(fn, kernel):
    """Run one test; return (status, reason): status is 'ok', 'fail' or 'skip'."""
    del started_guests[:]
    status, reason = 'ok', ''
    try:
        fn(kernel) if kernel else fn()
    except Skip as e:
        status, reason = 'skip', str(e)
    except Exception as e:
        status, reason = 'fail', f'{type(e).__name__}: {e}'
        print(''.join('# ' + line + '\n' for line in traceback.format_exc().splitlines()), end='')
    finally:
        for g in started_guests:
            g.close()
    for g in started_guests:
        problems = g.kernel_problems()
        if problems and status != 'fail':
            status, reason = 'fail', f'kernel problems: {problems[0]}'
        for line in problems:
            print(f'# console: {line}')
    for g in started_guests:
        if g.dir is None:
            continue
        if status == 'fail':
            print(f'# kept {os.path.relpath(g.dir, ROOT)} (console.log, qemu.log)')
        else:
            shutil.rmtree(g.dir, ignore_errors=True)
    return status, reason


def main(argv=None):
    """Run the registered tests whose name contains any argument (all without
    arguments) on each kernel; print TAP and a 'N passed, N failed' line."""
    selectors = sys.argv[1:] if argv is None else argv
    chosen = [t for t in _tests if not selectors or any(s in t.__name__ for s in selectors)]
    # VBHP_GUEST_TESTS_ONLY=1 (make check-debug): leave out the host-side
    # tests, which do not depend on the guest kernel
    host_side = os.environ.get('VBHP_GUEST_TESTS_ONLY', '0') != '1'
    cases = [(t, None) for t in chosen if not t.per_kernel and host_side]
    if any(t.per_kernel for t in chosen):  # only these need .cache/kernels.list
        cases += [(t, k) for k in kernels() for t in chosen
                  if t.per_kernel and (t.matrix or full_kernel(k))]
    print('TAP version 13')
    print(f'1..{len(cases)}', flush=True)
    counts = {'ok': 0, 'fail': 0, 'skip': 0}
    for i, (fn, kernel) in enumerate(cases, 1):
        name = f'{fn.__name__}[{kernel.short}]' if kernel else fn.__name__
        print(f'# {name}: {kernel.kver if kernel else "host"}', flush=True)
        t0 = time.monotonic()
        status, reason = _run_one(fn, kernel)
        counts[status] += 1
        took = f'({time.monotonic() - t0:.1f} s)'
        if status == 'ok':
            print(f'ok {i} - {name} {took}')
        elif status == 'skip':
            print(f'ok {i} - {name} # SKIP {reason}')
        else:
            print(f'not ok {i} - {name} {took}: {reason.splitlines()[0] if reason else ""}')
        sys.stdout.flush()
    summary = f"{counts['ok']} passed, {counts['fail']} failed"
    if counts['skip']:
        summary += f", {counts['skip']} skipped"
    print(summary)
    return 1 if counts['fail'] or not cases else 0
