"""The kselftests as a platform team runs them in a guest, with no help
from the host beyond a target.  Run by tests/run_tests.py."""
import os
import re
import shutil
import subprocess
import tempfile
import time

from vbhp import CACHE, ROOT, MiB, wait_until
from vbhp.balloon import Balloon, balloon_guest
from vbhp.build import SELFTESTS, build_module
from vbhp.runner import test


@test(matrix=True)
def kselftest_in_guest(kernel):
    """The kselftests as a user runs them in a guest (make install, then the
    runner `make run_tests` uses), on their own: before the module is loaded
    every program skips with the reason; loaded, with a target set over QMP,
    every program passes and skips only what does not apply, without and
    with deflate-on-oom."""
    build_module(kernel)  # also builds the selftests, static
    inst = os.path.join(CACHE, 'build', 'selftests-install')
    out = subprocess.run(['make', '-s', '-C', os.path.join(ROOT, 'selftests', 'virtio_balloon_hp'),
                          f'OUTPUT={SELFTESTS}', 'USERLDFLAGS=-static', f'INSTALL_PATH={inst}',
                          'install'], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    files = [os.path.join(inst, f) for f in os.listdir(inst)]
    with open(os.path.join(inst, 'vbhp_tests.list')) as f:
        progs = f.read().split()
    always = {'current == target: not asked (-t): vbhp_target checks it',
              'DEFLATE below 4 GiB: no -l'}
    skips = {False: always | {'ENOSPC: no deflate-on-oom', 'ENOSPC below 4 GiB: no deflate-on-oom',
                              'DEFLATE: no deflate-on-oom'},
             True: always | {'EOPNOTSUPP: deflate-on-oom is negotiated'}}

    def suite(g, name):
        t0 = time.monotonic()
        rc, tap = g.run('vbhp_run.sh', timeout=600)
        secs = time.monotonic() - t0
        with open(os.path.join(CACHE, 'run', f'kselftest-{kernel.short}-{name}.tap'), 'w') as f:
            f.write(tap)
        top = {prog: res + skip for res, prog, skip in re.findall(
            r'(?m)^(ok|not ok) \d+ selftests: virtio_balloon_hp: (\w+)( # SKIP)?$', tap)}
        g.log(f'{name}: suite took {secs:.1f} s; ' + ', '.join(f'{p} {top.get(p)}' for p in progs))
        assert rc == 0 and 'not ok' not in tap and list(top) == progs, tap
        return tap, top, secs

    for doom in (False, True):
        with balloon_guest(kernel, 2048, deflate_on_oom=doom, extra_files=files) as g:
            tap, top, _ = suite(g, 'unloaded')
            assert all(r.endswith('# SKIP') for r in top.values()), tap
            assert tap.count('SKIP virtio_balloon_hp is not loaded') == len(progs), tap
            b = Balloon(g)
            b.load()
            b.set_size(1536 * MiB)
            target = (512 * MiB) >> 12
            wait_until(b.stats, 30, f'the guest to see target {target}',
                       ok=lambda s: s['target'] == target)
            name = 'deflate-on-oom' if doom else 'plain'
            tap, top, secs = suite(g, name)
            assert not any(r.endswith('# SKIP') for r in top.values()), tap
            passed = re.findall(r'(?m)^# ok \d+ (?!# SKIP)(.*)$', tap)
            skipped = set(re.findall(r'(?m)^# ok \d+ # SKIP (.*)$', tap))
            g.log(f'{name}: {len(passed)} checks passed, skipped: {sorted(skipped)}')
            assert skipped == skips[doom], sorted(skipped)
            assert any(line.startswith('current 131072 pages reached target') for line in passed), tap
            assert any(line.startswith('MemTotal ') for line in passed), tap
            if doom:
                assert any(line.startswith('DEFLATE 64 MiB: success') for line in passed), tap


@test(per_kernel=False)
def kselftest_kernel_runner():
    """The target under the kernel's own kselftest framework, from the source
    Debian ships (linux-source-6.1, extracted by tests/setup/setup.sh): copied
    into tools/testing/selftests/, built and installed by its top-level
    Makefile through lib.mk (`make TARGETS=virtio_balloon_hp install`), run by
    run_kselftest.sh -c virtio_balloon_hp.  On this host, which has no
    balloon device, every program must skip with the reason the module gives:
    the test shows the target builds, installs and runs there; the checks
    themselves run in the guests (kselftest_in_guest, the image tier)."""
    src = os.path.join(CACHE, 'linux-src-6.1')
    sub = os.path.join('tools', 'testing', 'selftests')
    assert os.path.isfile(os.path.join(src, sub, 'lib.mk')), f'{src}: run tests/setup/setup.sh'
    work = tempfile.mkdtemp(prefix='kselftest-runner-', dir=os.path.join(CACHE, 'run'))
    tree, inst = os.path.join(work, 'linux', sub), os.path.join(work, 'install')
    shutil.copytree(src, os.path.join(work, 'linux'))  # the selftests Makefile reaches into scripts/
    shutil.copytree(os.path.join(ROOT, 'selftests', 'virtio_balloon_hp'),
                    os.path.join(tree, 'virtio_balloon_hp'))
    os.mkdir(inst)
    make = subprocess.run(['make', '-s', '-C', tree, 'TARGETS=virtio_balloon_hp',
                           f'VBHP_UAPI={os.path.join(ROOT, "uapi")}', f'KSFT_INSTALL_PATH={inst}',
                           'install'], capture_output=True, text=True)
    assert make.returncode == 0, make.stdout + make.stderr
    with open(os.path.join(inst, 'kselftest-list.txt')) as f:
        listed = f.read().split()
    progs = [p.split(':', 1)[1] for p in listed]
    run = subprocess.run([os.path.join(inst, 'run_kselftest.sh'), '-c', 'virtio_balloon_hp'],
                         capture_output=True, text=True, timeout=300)
    tap = run.stdout
    top = re.findall(r'(?m)^ok \d+ selftests: virtio_balloon_hp: (\w+) # SKIP$', tap)
    print(f'# kernel runner: {len(top)} of {len(progs)} programs skipped with no device '
          f'({", ".join(top)}); installed: {sorted(os.listdir(os.path.join(inst, "virtio_balloon_hp")))}')
    assert run.returncode == 0 and 'not ok' not in tap, tap + run.stderr
    assert progs and top == progs, (progs, tap)
    assert tap.count('SKIP virtio_balloon_hp is not loaded') == len(progs), tap
    shutil.rmtree(work)
