"""Boot a Debian guest image of tests/setup/mkimage.sh under QEMU with a NoCloud
seed whose user-data is docs/cloud-init.yaml, and follow what it prints.

The image is never written: each boot runs on a qcow2 overlay whose backing
file is the cached disk.img (or the overlay of an earlier boot of the same
image, to reuse what DKMS built there).  The seed's user-data is the very
docs/cloud-init.yaml; the harness only adds meta-data (a fresh instance-id, so
cloud-init runs again on a reused disk) and vendor-data that writes the .deb
to the path the user-data names on its "<-- the package" line.
"""
import base64
import os
import re
import shutil
import subprocess
import tempfile
import time

from . import CACHE, ROOT, MiB
from .guest import PROBLEM_PATTERNS, RUN_DIR, BootCrash, boot_crash, boot_retrying
from .hosts import Host
from .qmp import Qmp

IMAGES_DIR = os.path.join(CACHE, 'images')
USER_DATA = os.path.join(ROOT, 'docs', 'cloud-init.yaml')
TAG = 'vbhp-cloud-init'
SUMMARY = re.compile(TAG + r': (PASS|FAIL) (\d+) passed, (\d+) failed, (\d+) skipped \(kernel (\S+)\)(.*)')
# A kernel console line starts with its printk timestamp; only those are
# searched for kernel problems (cloud-init and systemd print words like
# WARNING), less those that userspace logged through /dev/kmsg ("name[pid]: ").
KERNEL_LINE = re.compile(r'^\[\s*\d+\.\d+\] (?![\w.@-]+\[\d+\]: )')
FIRST_LINE = TAG + ': installing'  # what the user-data prints first

def package_path_in_user_data():
    """The guest path the user-data installs the package from (its DEB= line)."""
    with open(USER_DATA) as f:
        for line in f:
            m = re.match(r'\s*DEB=(\S+)\s+# <-- the package', line)
            if m:
                if not m.group(1).startswith('/'):
                    raise RuntimeError(f'{USER_DATA}: the package line names no path: {line.strip()}')
                return m.group(1)
    raise RuntimeError(f'{USER_DATA}: no line DEB=... # <-- the package')


class Image:
    """One image built by mkimage.sh: .cache/images/NAME/{disk.img,vmlinuz,initrd.img,kver}."""

    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(IMAGES_DIR, name)
        for f in ('disk.img', 'vmlinuz', 'initrd.img', 'kver'):
            if not os.path.exists(os.path.join(self.dir, f)):
                raise RuntimeError(f'image {name} is not built: run tests/setup/mkimage.sh {name}')
        with open(os.path.join(self.dir, 'kver')) as f:
            self.kver = f.read().strip()
        self.disk = os.path.join(self.dir, 'disk.img')


class ImageBoot:
    """One boot of an image on a host, run to the end of docs/cloud-init.yaml.

    with ImageBoot(image, 'stock', deb, base=None) as b:
        b.wait_line('virtio_balloon_hp is up', ...)
    Entering returns once the user-data has printed its first line (within
    boot_timeout s); a guest kernel that crashed before, with our driver
    nowhere on the console, boots once more on a fresh overlay.
    The overlay (b.overlay) is kept for a later boot's base."""

    def __init__(self, image, host, deb, base=None, mem_mib=2048, target_mib=None, smp=2,
                 boot_timeout=600):
        """host: 'stock' (Debian's QEMU) or 'hp' (the reference host)."""
        self.image, self.host, self.deb = image, host, deb
        self.base = base or image.disk
        self.mem_mib, self.smp = mem_mib, smp
        self.target_mib = target_mib  # balloon target set before the guest boots
        self.proc = self.qmp = None
        self.t0 = None
        self.marks = {}  # what -> seconds since QEMU started
        self.boot_timeout = boot_timeout

    def __enter__(self):
        try:
            boot_retrying(self._boot, self._discard, f'{self.image.name}/{self.host}')
        except BaseException:
            self.close()
            raise
        return self

    def _boot(self):
        self.start()
        try:
            self.wait_line(FIRST_LINE, self.boot_timeout, 'cloud-init runs the user-data')
        except AssertionError as e:
            crash = boot_crash(self.console(), self.kernel_problems(), self.proc)
            if crash:
                raise BootCrash(str(e), crash) from None
            raise

    def _discard(self):
        """Forget a crashed boot: stop QEMU and remove its overlay and files."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.marks = {}

    def __exit__(self, *exc):
        self.close()

    def _seed(self):
        meta = os.path.join(self.dir, 'meta-data')
        with open(meta, 'w') as f:
            f.write(f'instance-id: vbhp-{self.image.name}-{self.host}-{int(time.time())}\n'
                    f'local-hostname: {self.image.name.replace(".", "-")}\n')
        vendor = os.path.join(self.dir, 'vendor-data')
        with open(self.deb, 'rb') as f:
            payload = base64.b64encode(f.read()).decode()
        with open(vendor, 'w') as f:
            f.write('#cloud-config\n'
                    '# the harness hands the package in: docs/cloud-init.yaml installs it from here\n'
                    'write_files:\n'
                    f'  - path: {package_path_in_user_data()}\n'
                    '    permissions: "0644"\n'
                    '    encoding: b64\n'
                    f'    content: {payload}\n')
        seed = os.path.join(self.dir, 'seed.img')
        subprocess.run(['cloud-localds', '-V', vendor, seed, USER_DATA, meta], check=True)
        return seed

    def start(self):
        os.makedirs(RUN_DIR, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f'image-{self.image.name}-{self.host}-', dir=RUN_DIR)
        self.overlay = os.path.join(self.dir, 'disk.qcow2')
        fmt = 'raw' if self.base.endswith('.img') else 'qcow2'
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', self.base, '-F', fmt,
                        self.overlay], check=True)
        seed = self._seed()
        host = Host(hp=self.host == 'hp')
        if not os.path.exists(host.qemu) and os.sep in host.qemu:
            raise RuntimeError(f'{host.qemu} missing: run host/build-qemu.sh')
        self.console_path = os.path.join(self.dir, 'console.log')
        qmp_path = os.path.join(self.dir, 'qmp.sock')
        argv = host.argv(self.mem_mib, self.smp, None) + [
            '-nodefaults', '-nographic', '-no-reboot', '-nic', 'none',
            '-kernel', os.path.join(self.image.dir, 'vmlinuz'),
            '-initrd', os.path.join(self.image.dir, 'initrd.img'),
            '-append', 'root=/dev/vda console=ttyS0 panic=-1',
            '-drive', f'file={self.overlay},if=virtio,format=qcow2',
            '-drive', f'file={seed},if=virtio,format=raw,readonly=on',
            '-serial', f'file:{self.console_path}',
                '-qmp', f'unix:{qmp_path},server=on,wait=off']
        if self.target_mib:  # the guest starts with part of its memory ballooned
            argv += ['-S']
        self.qemu_log = os.path.join(self.dir, 'qemu.log')
        with open(self.qemu_log, 'w') as log:
            log.write(' '.join(argv) + '\n')
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.qmp = Qmp(qmp_path)
        if self.target_mib:
            self.qmp.cmd('balloon', value=self.target_mib * MiB)
            self.qmp.cmd('cont')
        self.t0 = time.monotonic()
        self._seen = 0  # console lines already looked at by wait_line

    def elapsed(self):
        return time.monotonic() - self.t0

    def console(self):
        try:
            with open(self.console_path, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def wait_line(self, pattern, timeout, what):
        """Wait for a console line that matches the regex pattern (search); return
        the match.  Fails early when QEMU exits or a kernel problem shows."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.console()
            lines = text.splitlines()
            if not text.endswith('\n'):
                lines = lines[:-1]  # a line still being written
            for line in lines:
                m = rx.search(line)
                if m:
                    self.marks.setdefault(what, self.elapsed())
                    return m
            problems = self.kernel_problems()
            if problems:
                raise AssertionError(f'kernel problem while waiting for {what}: {problems[0]}')
            if self.proc.poll() is not None:
                raise AssertionError(f'QEMU exited ({self.proc.returncode}) before {what}; '
                                     f'console tail:\n{self.tail()}')
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout} s waiting for {what}; '
                                     f'console tail:\n{self.tail()}')
            time.sleep(0.5)

    def tail(self, n=25):
        return '\n'.join(self.console().splitlines()[-n:])

    def lines(self, prefix):
        """Console lines that contain prefix, the part after it."""
        return [line.split(prefix, 1)[1] for line in self.console().splitlines() if prefix in line]

    def kernel_problems(self):
        return [line for line in self.console().splitlines()
                if KERNEL_LINE.match(line) and any(p in line for p in PROBLEM_PATTERNS)]

    def guest_stats(self):
        return self.qmp.cmd('qom-get', path='/machine/peripheral/balloon0', property='guest-stats')

    def actual_mib(self):
        return self.qmp.cmd('query-balloon')['actual'] / MiB

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'the guest did not power off within {timeout} s; '
                                 f'console tail:\n{self.tail()}') from None

    def close(self):
        """Stop QEMU if the guest has not powered off by itself (a failed boot:
        its overlay is not used again)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.qmp:
            self.qmp.close()
            self.qmp = None
