"""Host-side test library for virtio_balloon_hp: QMP client, QEMU guest with a
serial shell agent, balloon helper and a small TAP test runner (stdlib only).

Kernels come from .cache/kernels.list, written by tests/setup/setup.sh.
"""
import base64
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

MiB = 1 << 20
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
CACHE = os.path.join(ROOT, '.cache')
RUN_DIR = os.path.join(CACHE, 'run')
BOOT_TIMEOUT = 120
# agent markers (see mkinitramfs.sh), at a line start
_READY = re.compile(rb'(?m)^@@VBHP-READY\n')
_END = re.compile(rb'(?m)^@@VBHP-END (\d+)\n')

PROBLEM_PATTERNS = ('WARNING:', 'BUG:', 'Oops', 'Out of memory', 'Killed process',
                    'possible circular locking', 'possible recursive locking',
                    'INFO: task', 'general protection fault', 'Call Trace', 'Kernel panic')

# What an OOM-killer report prints; tolerated only in a test that expects one.
OOM_REPORT_PATTERNS = ('Out of memory', 'Killed process', 'Call Trace')


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


class Kernel:
    """One line of .cache/kernels.list: short name, ABI name, headers dir."""

    def __init__(self, short, kver, headers):
        self.short, self.kver, self.headers = short, kver, headers
        self.root = os.path.join(CACHE, 'kernels', kver)
        self.vmlinuz = os.path.join(self.root, 'boot', f'vmlinuz-{kver}')
        self.moddir = os.path.join(self.root, 'lib', 'modules', kver)

    def module(self, name):
        """Path of an in-tree module (.ko or .ko.xz) of this kernel's image."""
        for dirpath, _, names in os.walk(os.path.join(self.moddir, 'kernel')):
            for suffix in ('.ko', '.ko.xz'):
                if name + suffix in names:
                    return os.path.join(dirpath, name + suffix)
        raise FileNotFoundError(f'no module {name} in {self.moddir}')

    def __repr__(self):
        return f'Kernel({self.short}, {self.kver})'


def _known_kernels():
    path = os.path.join(CACHE, 'kernels.list')
    if not os.path.exists(path):
        raise RuntimeError(f'{path} missing: run tests/setup/setup.sh')
    with open(path) as f:
        return {k.short: k for k in (Kernel(*line.split()) for line in f if line.strip())}


def find_kernel(short):
    """The Kernel called short ('6.1', '6.12') in .cache/kernels.list."""
    known = _known_kernels()
    if short not in known:
        raise RuntimeError(f'kernel {short} not set up: run VBHP_KERNELS={short} tests/setup/setup.sh')
    return known[short]


def kernels():
    """Kernels from .cache/kernels.list, restricted by env VBHP_KERNELS."""
    known = _known_kernels()
    wanted = os.environ.get('VBHP_KERNELS', '').split() or list(known)
    missing = [s for s in wanted if s not in known]
    if missing:
        raise RuntimeError(f'kernels {missing} not set up: run VBHP_KERNELS="{" ".join(wanted)}" tests/setup/setup.sh')
    return [known[s] for s in wanted]


class QmpError(Exception):
    pass


class Qmp:
    """QMP client on a unix socket. Asynchronous events are kept in self.event_log
    (each event dict gets a 'received' key: time.monotonic())."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:  # QEMU creates the socket shortly after it starts
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._buf = b''
        self.event_log = []
        self._read(deadline)  # greeting
        self.cmd('qmp_capabilities')

    def _read(self, deadline):
        """Next message; events are logged and returned like any other."""
        while b'\n' not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no QMP message in time')
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('QMP connection closed')
            self._buf += data
        line, self._buf = self._buf.split(b'\n', 1)
        msg = json.loads(line)
        if 'event' in msg:
            msg['received'] = time.monotonic()
            self.event_log.append(msg)
        return msg

    def _drain(self):
        while b'\n' in self._buf or select.select([self.sock], [], [], 0)[0]:
            self._read(time.monotonic() + 5)

    def cmd(self, name, timeout=60, **args):
        """Execute a command; return its 'return' value or raise QmpError."""
        self.sock.sendall(json.dumps({'execute': name, 'arguments': args}).encode() + b'\n')
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if 'return' in msg:
                return msg['return']
            if 'error' in msg:
                raise QmpError(f"{name}: {msg['error']['class']}: {msg['error']['desc']}")

    def events(self, name=None):
        """Events received so far (all, or those called name), oldest first."""
        self._drain()
        return [e for e in self.event_log if name is None or e['event'] == name]

    def wait_event(self, name, pred=lambda e: True, timeout=30):
        """First event (already received or arriving before the timeout) called
        name for which pred(event) holds."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            self._drain()
            for e in self.event_log[checked:]:
                if e['event'] == name and pred(e):
                    return e
            checked = len(self.event_log)
            try:
                self._read(deadline)  # block for the next message
            except TimeoutError:
                raise TimeoutError(f'no matching {name} event in {timeout} s') from None

    def close(self):
        self.sock.close()


class Balloon:
    """The virtio-balloon device, driven over QMP. Sizes are guest memory sizes
    in bytes as QMP defines them: the host wants the guest to have this much."""

    def __init__(self, qmp):
        self.qmp = qmp

    def set_target_bytes(self, guest_bytes):
        self.qmp.cmd('balloon', value=int(guest_bytes))

    def query(self):
        """Guest memory size in bytes the device currently reports (RAM - balloon)."""
        return self.qmp.cmd('query-balloon')['actual']


def _kvm_usable():
    """/dev/kvm alone is not enough: a nested PVM hypervisor (no vmx/svm flag)
    offers one that cannot run stock kernels."""
    with open('/proc/cpuinfo') as f:
        flags = re.search(r'^flags\s*:(.*)$', f.read(), re.M).group(1).split()
    return os.access('/dev/kvm', os.R_OK | os.W_OK) and bool({'vmx', 'svm'} & set(flags))


class BootCrash(RuntimeError):
    """The guest kernel panicked before the agent came up."""

    def __init__(self, msg, oops):
        super().__init__(msg)
        self.oops = oops


_started = []  # guests started by the running test; the runner checks and cleans them


class Guest:
    """A QEMU guest running a kernel from kernels.list with the initramfs agent.
    Files of each run (initramfs, console.log, qemu.log, sockets) live in a temp
    dir under .cache/run/; the runner removes it when the test passed."""

    def __init__(self, kernel='6.1', mem_mib=2048, smp=2, files=(), append='',
                 qemu='qemu-system-x86_64', qemu_args=(), balloon_args='', trace=None):
        self.kernel = kernel if isinstance(kernel, Kernel) else find_kernel(kernel)
        self.mem_mib, self.smp, self.files, self.append = mem_mib, smp, list(files), append
        self.qemu, self.qemu_args, self.balloon_args = qemu, list(qemu_args), balloon_args
        self.trace_events = trace  # QEMU trace event pattern logged to trace.log
        self.dir = self.console_path = self.proc = self.qmp = self.balloon = self._agent = None
        self._console_text = None  # snapshot taken when QEMU stops
        self.boot_seconds = None
        self.expect_oom = False  # a test that provokes the OOM killer sets this

    def __enter__(self):
        _started.append(self)
        for attempt in (1, 2):
            try:
                self.start()
                return self
            except BootCrash as e:
                self.close()
                if attempt == 2:
                    raise
                # TCG now and then crashes a guest kernel at boot, long before
                # anything of ours runs (seen: "Oops: int3" in an initcall of
                # 6.12 under multi-threaded TCG).  Boot once more, and say so.
                print(f'# boot retry: guest kernel crashed at boot: {e.oops}', flush=True)
                shutil.rmtree(self.dir, ignore_errors=True)
                self.proc = self.qmp = self._agent = self._console_text = None
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        t0 = time.monotonic()
        os.makedirs(RUN_DIR, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f'{self.kernel.short}-', dir=RUN_DIR)
        self.console_path = os.path.join(self.dir, 'console.log')
        initrd = os.path.join(self.dir, 'initramfs.cpio.gz')
        subprocess.run([os.path.join(TESTS_DIR, 'setup', 'mkinitramfs.sh'), self.kernel.kver, initrd,
                        *self.files], check=True)

        # QEMU connects to our agent socket at startup, so no guest output is lost.
        agent_path = os.path.join(self.dir, 'agent.sock')
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(agent_path)
        listener.listen(1)
        kvm = _kvm_usable()
        cmdline = f'console=ttyS0 panic=-1 {self.append}'.strip()
        qmp_path = os.path.join(self.dir, 'qmp.sock')
        argv = [self.qemu, '-machine', 'q35', '-accel', 'kvm' if kvm else 'tcg,thread=multi',
                '-cpu', 'host' if kvm else 'max', '-m', str(self.mem_mib), '-smp', str(self.smp),
                '-nodefaults', '-nographic', '-no-reboot',
                '-kernel', self.kernel.vmlinuz, '-initrd', initrd, '-append', cmdline,
                '-serial', f'file:{self.console_path}',
                '-chardev', f'socket,id=agent,path={agent_path}',
                '-serial', 'chardev:agent',
                '-device', 'virtio-balloon-pci,id=balloon0' + self.balloon_args,
                '-qmp', f'unix:{qmp_path},server=on,wait=off', *self.qemu_args]
        if self.trace_events:
            argv += ['-d', f'trace:{self.trace_events}', '-D', os.path.join(self.dir, 'trace.log')]
        self.qemu_log = os.path.join(self.dir, 'qemu.log')
        with open(self.qemu_log, 'w') as log:
            log.write(' '.join(argv) + '\n')
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        listener.settimeout(1)
        deadline = time.monotonic() + 30
        while self._agent is None:
            try:
                self._agent, _ = listener.accept()
            except socket.timeout:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    listener.close()
                    with open(self.qemu_log, errors='replace') as f:
                        raise RuntimeError(f'QEMU did not start:\n{f.read()}') from None
        listener.close()
        self._rbuf = b''
        self.qmp = Qmp(qmp_path)
        self.balloon = Balloon(self.qmp)
        try:
            self._read_until(_READY, time.monotonic() + BOOT_TIMEOUT, f'boot ({BOOT_TIMEOUT} s)')
        except (TimeoutError, ConnectionError) as e:
            console = self.console()
            msg = (f'guest did not come up ({e}); console tail:\n'
                   + '\n'.join(console.splitlines()[-30:]))
            oops = [line for line in console.splitlines() if 'Oops' in line or 'BUG:' in line]
            if oops and 'Kernel panic' in console:
                raise BootCrash(msg, oops[0]) from None
            raise RuntimeError(msg) from None
        self.boot_seconds = time.monotonic() - t0

    def _read_until(self, marker, deadline, what):
        """Read agent bytes until the regex marker matches; return (bytes before, match)."""
        while True:
            m = marker.search(self._rbuf)
            if m:
                out, self._rbuf = self._rbuf[:m.start()], self._rbuf[m.end():]
                return out, m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f'timed out: {what}')
            self._agent.settimeout(min(left, 1))
            try:
                data = self._agent.recv(65536)
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise ConnectionError(f'QEMU exited with {self.proc.returncode}: {what}')
                continue
            if not data:
                raise ConnectionError(f'agent connection closed (QEMU exit code {self.proc.wait(10)}): {what}')
            self._rbuf += data

    def run(self, cmd, timeout=60):
        """Run a shell command in the guest; return (exit code, stdout+stderr)."""
        if self._agent is None:
            raise RuntimeError('guest agent unusable (not started or an earlier command timed out)')
        if '\n' in cmd:  # the agent reads one line per command
            cmd = f'eval "$(echo {base64.b64encode(cmd.encode()).decode()} | base64 -d)"'
        self._agent.sendall(cmd.encode() + b'\n')
        try:
            out, m = self._read_until(_END, time.monotonic() + timeout, f'guest command ({timeout} s): {cmd}')
        except (TimeoutError, ConnectionError):
            self._agent = None  # the agent is still busy: its next output would be out of step
            raise
        return int(m.group(1)), out.decode(errors='replace')

    def sh(self, cmd, timeout=60):
        """Run a command; return its output; raise if its exit code is not 0."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise AssertionError(f'guest command failed with {rc}: {cmd}\n{out}')
        return out

    def log(self, msg):
        """Report something the test measured, as TAP comment lines."""
        for line in str(msg).splitlines():
            print(f'# {self.kernel.short}: {line}', flush=True)

    def meminfo(self):
        """/proc/meminfo as a dict of ints (kB for the fields measured in kB)."""
        return {k: int(v.split()[0]) for k, v in
                (line.split(':', 1) for line in self.sh('cat /proc/meminfo').splitlines())}

    def trace(self):
        """QEMU's trace log so far (with trace= events enabled)."""
        try:
            with open(os.path.join(self.dir, 'trace.log'), errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def console(self):
        """Text of the guest console (ttyS0) so far."""
        if self._console_text is not None:
            return self._console_text
        if not (self.console_path and os.path.exists(self.console_path)):
            return ''
        with open(self.console_path, errors='replace') as f:
            return f.read()

    def kernel_problems(self):
        """Console lines that show a kernel warning, bug, oops, OOM, lockdep or hang report.
        With self.expect_oom, the lines of OOM-killer reports themselves are not
        problems (anything else inside them still is)."""
        problems, in_oom = [], False
        for line in self.console().splitlines():
            if self.expect_oom and 'invoked oom-killer' in line:
                in_oom = True
            expected = in_oom and any(p in line for p in OOM_REPORT_PATTERNS)
            if any(p in line for p in PROBLEM_PATTERNS) and not expected:
                problems.append(line)
            if 'Killed process' in line:
                in_oom = False
        return problems

    def close(self):
        """Quit QEMU (over QMP, then kill after a deadline). Files stay in self.dir."""
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp.cmd('quit', timeout=5)
            except Exception:
                pass  # QEMU may close the socket before answering
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self._agent, self.qmp):
            if s:
                s.close()
        self._agent = None
        if self.proc:
            self._console_text = self.console()


# ---- test runner -------------------------------------------------------------

_tests = []


class Skip(Exception):
    """Raise in a test to skip it (with a reason)."""


def test(fn=None, per_kernel=True):
    """Register a test.  @test: fn(kernel) runs once per selected kernel;
    @test(per_kernel=False): fn() runs once."""
    def register(fn):
        fn.per_kernel = per_kernel
        _tests.append(fn)
        return fn
    return register(fn) if fn else register


def _run_one(fn, kernel):
    """Run one test; return (status, reason): status is 'ok', 'fail' or 'skip'."""
    del _started[:]
    status, reason = 'ok', ''
    try:
        fn(kernel) if kernel else fn()
    except Skip as e:
        status, reason = 'skip', str(e)
    except Exception as e:
        status, reason = 'fail', f'{type(e).__name__}: {e}'
        print(''.join('# ' + line + '\n' for line in traceback.format_exc().splitlines()), end='')
    finally:
        for g in _started:
            g.close()
    for g in _started:
        problems = g.kernel_problems()
        if problems and status != 'fail':
            status, reason = 'fail', f'kernel problems: {problems[0]}'
        for line in problems:
            print(f'# console: {line}')
    for g in _started:
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
    cases = [(t, None) for t in chosen if not t.per_kernel]
    if any(t.per_kernel for t in chosen):  # only these need .cache/kernels.list
        cases += [(t, k) for k in kernels() for t in chosen if t.per_kernel]
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
