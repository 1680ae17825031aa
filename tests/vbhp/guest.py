"""A QEMU guest running a kernel from kernels.list with the initramfs agent
(tests/setup/mkinitramfs.sh), and the checks of its kernel log."""
import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from . import CACHE, TESTS_DIR, MiB
from .hosts import Host
from .kernels import Kernel, find_kernel
from .qmp import Qmp, QmpError

RUN_DIR = os.path.join(CACHE, 'run')
BOOT_TIMEOUT = 120
# agent markers (see mkinitramfs.sh), at a line start
_READY = re.compile(rb'(?m)^@@VBHP-READY\n')
_END = re.compile(rb'(?m)^@@VBHP-END (\d+)\n')
_READY_OR_END = re.compile(rb'(?m)^@@VBHP-(?:READY|END (\d+))\n')
# what the kernel prints as it hands over to the initramfs's /init or the
# root file system's init: nothing of ours can have run before this line
_INIT_STARTED = re.compile(r'Run \S+ as init process')
HIBERNATE_TIMEOUT = 300  # to write the image and power off, or to restore it (TCG)

PROBLEM_PATTERNS = ('WARNING:', 'BUG:', 'Oops', 'Out of memory', 'Killed process',
                    'possible circular locking', 'possible recursive locking',
                    'INFO: task', 'general protection fault', 'Call Trace', 'Kernel panic',
                    'suspected memory leak', 'ODEBUG:')
KMEMLEAK = '/sys/kernel/debug/kmemleak'
# A command that outlives its timeout is sampled this many times (vCPU
# places, a second apart), then given this long to end: past the kernel's
# hung-task timeout (120 s), so that a task blocked all along is reported.
STALL_SAMPLES = 3
STALL_GRACE = 150
KMEMLEAK_TIMEOUT = 300  # two scans of a KASAN kernel's memory under TCG

# What an OOM-killer report prints; tolerated only in a test that expects one.
OOM_REPORT_PATTERNS = ('Out of memory', 'Killed process', 'Call Trace')


class BootCrash(RuntimeError):
    """The guest kernel crashed, or reported a bug, at boot, before anything of ours ran."""

    def __init__(self, msg, oops):
        super().__init__(msg)
        self.oops = oops


started_guests = []  # guests started by the running test; the runner checks and cleans them


def boot_crash(console, problems, proc):
    """What crashed a boot that never came up: the first of its kernel
    problem lines, QEMU's exit (a silent reset, such as a triple fault,
    which -no-reboot turns into an exit with nothing on the console), or a
    kernel that went silent before it started any init (seen: 6.1 under
    TCG stopped at 1.2 s after "pnp: PnP ACPI: found 6 devices", with no
    RCU stall report in the next 120 s).  None when there is none of them,
    or when the console names our driver (the crash may be ours)."""
    if proc.poll() is not None:
        problems = problems + [f'QEMU exited ({proc.returncode}) before the guest came up']
    elif not _INIT_STARTED.search(console):
        last = console.rstrip().rpartition('\n')[2].strip()
        problems = problems + [f'kernel hung before it started init; last console line: {last!r}']
    if problems and 'virtio_balloon_hp' not in console:
        return problems[0]
    return None


def boot_retrying(boot, discard, what):
    """boot(), and once more after discard() when it raises BootCrash.

    TCG now and then crashes a guest kernel at boot, long before anything of
    ours runs (seen: "Oops: int3" in an initcall of 6.12 under multi-threaded
    TCG), and a debug kernel may report a bug of its own there.  One such
    boot is retried and said on the log; a second one fails the test, and
    its files stay for a look."""
    try:
        return boot()
    except BootCrash as e:
        print(f'# boot retry: {what}: guest kernel failed at boot: {e.oops}', flush=True)
        discard()
    return boot()


def parse_meminfo(text):
    """/proc/meminfo text as a dict of ints (kB for the fields measured in kB)."""
    return {k: int(v.split()[0]) for k, v in (line.split(':', 1) for line in text.splitlines())}


def parse_vmstat(text):
    """/proc/vmstat text as a dict of ints."""
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def parse_buddyinfo(text):
    """/proc/buddyinfo text as {zone name: free blocks per order, from 0},
    the nodes summed."""
    zones = {}
    for line in text.splitlines():
        f = line.replace(',', ' ').split()
        counts = [int(n) for n in f[4:]]
        have = zones.setdefault(f[3], [0] * len(counts))
        zones[f[3]] = [a + b for a, b in zip(have, counts)]
    return zones


class Guest:
    """A QEMU guest running a kernel from kernels.list with the initramfs agent.
    Files of each run (initramfs, console.log, qemu.log, sockets) live in a temp
    dir under .cache/run/; the runner removes it when the test passed."""

    def __init__(self, kernel='6.1', mem_mib=2048, smp=2, files=(), append='',
                 host=None, qemu_args=(), swap_mib=0, at_start=None):
        self.kernel = kernel if isinstance(kernel, Kernel) else find_kernel(kernel)
        self.mem_mib, self.smp, self.files, self.append = mem_mib, smp, list(files), append
        # RAM QEMU gives beyond mem_mib: what a debug kernel's checkers take
        self.extra_mib = self.kernel.checker_overhead_mib(mem_mib)
        self.host = host or Host()
        self.qemu_args = list(qemu_args)
        self.swap_mib = swap_mib  # a virtio disk of this size to hibernate to (hibernate())
        self._earlier_console = ''  # the console of the QEMU before a hibernation
        # at_start(guest) runs while QEMU waits (-S) before the guest's first
        # instruction: what a host sets before it starts a guest (a target)
        self.at_start = at_start
        # time.time() (QMP's event clock) when QEMU started, when the agent came up
        self.launched = self.up_at = None
        self.dir = self.console_path = self.proc = self.qmp = self._agent = None
        self._console_text = None  # snapshot taken when QEMU stops
        self.boot_seconds = None
        self.expect_oom = False  # a test that provokes the OOM killer sets this
        self.expect_alloc_failures = False  # ... and one that injects allocation failures
        # ... and one that loads a module leaking on purpose: its name, as
        # kmemleak's backtraces show it ('kmemleak_test')
        self.expect_leaks_in = None
        self._problems_from = 0  # console offset kernel_problems() reads from (forget_problems)
        self.leaks = []  # first lines of the kmemleak reports of kmemleak_scan()

    def __enter__(self):
        started_guests.append(self)
        try:
            boot_retrying(self.start, self._discard, self.kernel.short)
        except BaseException:
            self.close()
            raise
        return self

    def _discard(self):
        """Forget a crashed boot: stop QEMU and remove its files."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = self.qmp = self._agent = self._console_text = None
        self._earlier_console = ''

    def __exit__(self, *exc):
        self.close()

    def start(self):
        t0 = time.monotonic()
        os.makedirs(RUN_DIR, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f'{self.kernel.short}-', dir=RUN_DIR)
        self.console_path = os.path.join(self.dir, 'console.log')
        subprocess.run([os.path.join(TESTS_DIR, 'setup', 'mkinitramfs.sh'), self.kernel.kver,
                        os.path.join(self.dir, 'initramfs.cpio.gz'), *self.files], check=True)
        if self.swap_mib:
            with open(os.path.join(self.dir, 'swap.img'), 'wb') as f:
                f.truncate(self.swap_mib * MiB)
        self._launch(self.at_start)
        try:
            self._read_until(_READY, time.monotonic() + BOOT_TIMEOUT, f'boot ({BOOT_TIMEOUT} s)')
        except (TimeoutError, ConnectionError) as e:
            console = self.console()
            msg = (f'guest did not come up ({e}); console tail:\n'
                   + '\n'.join(console.splitlines()[-30:]))
            # A panic, or a hang (6.1 under TCG: CPU 0 looping in int3,
            # reported only as an RCU stall with its backtrace).
            stalls = [line for line in console.splitlines() if 'detected stalls' in line]
            crash = boot_crash(console, stalls + self.kernel_problems(), self.proc)
            if crash:
                raise BootCrash(msg, crash) from None
            raise RuntimeError(msg) from None
        # A report before the agent came up is the kernel's own, unless the
        # console names our driver (seen: 7.3's "BUG: KASAN: wild-memory-
        # access" in identify_cpu() at 0.004 s, on 2 of about 25 boots of
        # its debug build): retried like a crash, and said on the log.
        crash = boot_crash(self.console(), self.kernel_problems(), self.proc)
        if crash:
            raise BootCrash(f'kernel report before the guest came up: {crash}', crash)
        self.up_at = time.time()
        self.boot_seconds = time.monotonic() - t0

    def _launch(self, at_start=None):
        """Start QEMU on the files in self.dir and connect the agent and QMP.
        With @at_start, QEMU starts paused (-S), at_start(self) runs (QMP
        is up, the guest is not), and then the guest does."""
        # QEMU connects to our agent socket at startup, so no guest output is lost.
        agent_path = os.path.join(self.dir, 'agent.sock')
        qmp_path = os.path.join(self.dir, 'qmp.sock')
        for path in (agent_path, qmp_path):
            if os.path.exists(path):
                os.unlink(path)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(agent_path)
        listener.listen(1)
        resume = 'vbhp_resume=vda' if self.swap_mib else ''  # see mkinitramfs.sh
        cmdline = ' '.join(f'console=ttyS0 panic=-1 {self.append} {resume}'.split())
        argv = self.host.argv(self.mem_mib + self.extra_mib, self.smp,
                              os.path.join(self.dir, 'trace.log'))
        argv += ['-nodefaults', '-nographic', '-no-reboot',
                 '-kernel', self.kernel.vmlinuz, '-initrd', os.path.join(self.dir, 'initramfs.cpio.gz'),
                 '-append', cmdline,
                 '-serial', f'file:{self.console_path}',
                 '-chardev', f'socket,id=agent,path={agent_path}',
                 '-serial', 'chardev:agent',
                 '-qmp', f'unix:{qmp_path},server=on,wait=off', *self.qemu_args]
        if self.swap_mib:
            argv += ['-drive', f'file={os.path.join(self.dir, "swap.img")},if=virtio,format=raw']
        if at_start:
            argv.append('-S')
        self.qemu_log = os.path.join(self.dir, 'qemu.log')
        with open(self.qemu_log, 'a') as log:
            log.write(' '.join(argv) + '\n')
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.launched = time.time()
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
        if at_start:
            at_start(self)
            self.qmp.cmd('cont')

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
        if not cmd.strip():
            raise ValueError('empty guest command (the agent skips empty lines)')
        if '\n' in cmd:  # the agent reads one line per command
            cmd = f'eval "$(echo {base64.b64encode(cmd.encode()).decode()} | base64 -d)"'
        self._agent.sendall(cmd.encode() + b'\n')
        t0 = time.monotonic()
        try:
            out, m = self._read_until(_END, t0 + timeout, f'guest command ({timeout} s): {cmd}')
        except ConnectionError:
            self._agent = None
            raise
        except TimeoutError as e:
            raise TimeoutError(f'{e}; {self._stall_report(t0)}') from None
        return int(m.group(1)), out.decode(errors='replace')

    def _stall_report(self, t0):
        """After a command outlived its timeout: where each vCPU is (a few
        samples), then whether the command ends within STALL_GRACE more
        seconds.  A task blocked that long also gets the kernel's hung-task
        report (120 s) on the console, a kernel problem of this guest.  A
        command that ends late leaves the agent in step; one that does not
        leaves it unusable (its next output would be out of step)."""
        samples = [self.vcpu_places()]
        for _ in range(STALL_SAMPLES - 1):
            time.sleep(1)
            samples.append(self.vcpu_places())
        where = ' | '.join(', '.join(s) for s in samples)
        try:
            _, m = self._read_until(_END, time.monotonic() + STALL_GRACE, 'the late command')
        except (TimeoutError, ConnectionError):
            self._agent = None
            return f'still running {time.monotonic() - t0:.0f} s after it started; vCPUs at: {where}'
        return f'it ended {time.monotonic() - t0:.1f} s after it started (exit code {m.group(1).decode()}); vCPUs at: {where}'

    def vcpu_places(self):
        """Each vCPU's instruction pointer, as 'cpu0 function+0xoff' where
        the kernel's System.map is at hand (the debug kernels' build), else
        the bare address; read off QEMU's monitor, so it works while the
        guest agent is busy."""
        try:
            regs = self.qmp.cmd('human-monitor-command', timeout=10,
                                **{'command-line': 'info registers -a'})
        except (OSError, QmpError) as e:  # QEMU gone or stuck too
            return [f'(no answer from QEMU: {e})']
        rips = [int(r, 16) for r in re.findall(r'RIP=([0-9a-f]+)', regs)]
        return [f'cpu{i} {self.kernel.symbolize(rip)}' for i, rip in enumerate(rips)]

    def sh(self, cmd, timeout=60):
        """Run a command; return its output; raise if its exit code is not 0."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise AssertionError(f'guest command failed with {rc}: {cmd}\n{out}')
        return out

    def hibernate(self, before_cont=None):
        """Hibernate to the swap disk (swap_mib), power off, and restore in a
        new QEMU on the same disk.  The agent, still waiting for its
        hibernate command to return, answers on the new QEMU's socket.  The
        new QEMU starts paused: before_cont(self) sets what a host carries
        over a restart (a balloon target) before any guest code runs.
        Returns the seconds to write the image and to restore it."""
        assert self.swap_mib, 'a guest to hibernate needs swap_mib'
        self.sh('grep -q ^/dev/vda /proc/swaps || { mkswap /dev/vda && swapon /dev/vda; }')
        t0 = time.monotonic()
        self._agent.sendall(b'echo shutdown > /sys/power/disk && echo disk > /sys/power/state\n')
        try:
            out, m = self._read_until(_END, t0 + HIBERNATE_TIMEOUT, 'hibernation to power off')
            raise AssertionError(f'hibernation failed ({m.group(1).decode()}): {out.decode(errors="replace")}')
        except ConnectionError:
            pass  # QEMU powered off
        assert self.proc.wait(10) == 0, f'QEMU exited with {self.proc.returncode} at power off'
        saved = time.monotonic() - t0
        self._earlier_console = self.console()
        os.rename(self.console_path, os.path.join(self.dir, 'console-hibernated.log'))
        self.close()
        self._console_text = None
        t0 = time.monotonic()
        self._launch(before_cont or (lambda g: None))
        out, m = self._read_until(_READY_OR_END, t0 + HIBERNATE_TIMEOUT, 'the restored agent')
        if m.group(1) is None:
            raise AssertionError('the guest booted afresh: no hibernation image was restored')
        assert m.group(1) == b'0', f'hibernate command failed after restore: {out.decode(errors="replace")}'
        return saved, time.monotonic() - t0

    def host_size(self, size):
        """The guest size in bytes to tell the host (QMP balloon) for a guest
        of @size as tests count it (mem_mib), the checkers' RAM added."""
        return size + self.extra_mib * MiB

    def guest_size(self, actual):
        """A size the host reports (QMP actual) as tests count it."""
        return actual - self.extra_mib * MiB

    def log(self, msg):
        """Report something the test measured, as TAP comment lines."""
        for line in str(msg).splitlines():
            print(f'# {self.kernel.short}: {line}', flush=True)

    def meminfo(self):
        """/proc/meminfo as a dict of ints (kB for the fields measured in kB)."""
        return parse_meminfo(self.sh('cat /proc/meminfo'))

    def vmstat(self):
        """/proc/vmstat as a dict of ints."""
        return parse_vmstat(self.sh('cat /proc/vmstat'))

    def buddyinfo(self):
        """/proc/buddyinfo: free blocks per order, per zone (parse_buddyinfo)."""
        return parse_buddyinfo(self.sh('cat /proc/buddyinfo'))

    def meminfo_vmstat(self):
        """/proc/meminfo and /proc/vmstat read in one shell command, as close
        to the same moment as the guest allows: (meminfo, vmstat)."""
        meminfo, vmstat = self.sh('cat /proc/meminfo; echo ==; cat /proc/vmstat').split('==\n')
        return parse_meminfo(meminfo), parse_vmstat(vmstat)

    def trace(self):
        """QEMU's trace log so far (events of host.trace)."""
        try:
            with open(os.path.join(self.dir, 'trace.log'), errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def console(self):
        """Text of the guest console (ttyS0) so far, across hibernations."""
        if self._console_text is not None:
            return self._console_text
        if not (self.console_path and os.path.exists(self.console_path)):
            return self._earlier_console
        with open(self.console_path, errors='replace') as f:
            return self._earlier_console + f.read()

    def qemu_status(self):
        """QEMU's process as the host sees it: VmRSS and VmHWM (its peak) in
        bytes from /proc/PID/status; minflt and majflt, the page faults it
        took so far, and cpu_s, its user + system seconds, from /proc/PID/stat."""
        with open(f'/proc/{self.proc.pid}/status') as f:
            status = dict(line.split(':', 1) for line in f if ':' in line)
        with open(f'/proc/{self.proc.pid}/stat') as f:
            stat = f.read().rsplit(')', 1)[1].split()  # fields from the 3rd (state) on
        return dict(VmRSS=int(status['VmRSS'].split()[0]) * 1024,
                    VmHWM=int(status['VmHWM'].split()[0]) * 1024,
                    minflt=int(stat[7]), majflt=int(stat[9]),
                    cpu_s=(int(stat[11]) + int(stat[12])) / os.sysconf('SC_CLK_TCK'))

    def qemu_reset_peak(self):
        """Restart QEMU's VmHWM from its VmRSS now (clear_refs, value 5)."""
        with open(f'/proc/{self.proc.pid}/clear_refs', 'w') as f:
            f.write('5')

    def kernel_problems(self):
        """Console lines that show a kernel warning, bug, oops, OOM, lockdep,
        KASAN, kmemleak, debugobjects or hang report.  With self.expect_oom,
        the lines of OOM-killer reports themselves are not problems (anything
        else inside them still is); with self.expect_alloc_failures, the
        stack trace of an allocation failure report is not either."""
        problems, in_oom, in_alloc = [], False, False
        for line in self.console()[self._problems_from:].splitlines():
            if self.expect_oom and 'invoked oom-killer' in line:
                in_oom = True
            if self.expect_alloc_failures and 'page allocation failure' in line:
                in_alloc = True
            expected = ((in_oom and any(p in line for p in OOM_REPORT_PATTERNS))
                        or (in_alloc and 'Call Trace' in line)
                        # kmemleak's count line: kmemleak_scan() judges each object
                        or (self.expect_leaks_in and 'suspected memory leak' in line))
            if any(p in line for p in PROBLEM_PATTERNS) and not expected:
                problems.append(line)
            if 'Killed process' in line:
                in_oom = False
            if '</TASK>' in line:
                in_alloc = False
        return problems + [f'kmemleak: {leak}' for leak in self.leaks]

    def unexpected_leaks(self, report):
        """The objects of a kmemleak report (its 'unreferenced object'
        paragraphs), less those whose backtrace lies in self.expect_leaks_in."""
        objects = [o for o in re.split(r'(?m)^(?=unreferenced object)', report) if o.strip()]
        tag = f'[{self.expect_leaks_in}]'
        return [o for o in objects if not (self.expect_leaks_in and tag in o)]

    def forget_problems(self):
        """Report only what the console shows from now on, and no leak
        kmemleak suspects so far: for a test that provoked reports on
        purpose and checked them."""
        self._problems_from = len(self.console())
        self.leaks = []
        if self.kernel.config('CONFIG_DEBUG_KMEMLEAK'):
            self.sh(f'echo clear > {KMEMLEAK}')  # what it suspects now is not reported again

    def kmemleak_scan(self):
        """On a kernel with kmemleak (the debug tier), scan twice and log
        what it suspects, each a kernel problem of this guest
        (kernel_problems).  Two scans: kmemleak reports an object only when
        its checksum held across a scan, and a new object has none yet."""
        if (not self.kernel.config('CONFIG_DEBUG_KMEMLEAK') or self._agent is None
                or self.proc.poll() is not None or not self.qmp.cmd('query-status')['running']):
            return
        out = self.sh(f'echo scan > {KMEMLEAK} && echo scan > {KMEMLEAK} && cat {KMEMLEAK}',
                      timeout=KMEMLEAK_TIMEOUT)
        leaks = self.unexpected_leaks(out)
        if leaks:
            self.leaks.append(leaks[0].strip().splitlines()[0])
            self.log('kmemleak:\n' + out)
        elif out.strip():
            self.log(f'kmemleak: only objects of {self.expect_leaks_in}, which leaks on purpose')

    def close(self):
        """Scan for leaks (kmemleak_scan), then quit QEMU (over QMP, then kill
        after a deadline). Files stay in self.dir."""
        if self.proc and self.proc.poll() is None:
            try:
                self.kmemleak_scan()
            except Exception as e:  # noqa: BLE001  (the guest may be gone)
                self.log(f'no kmemleak scan: {e}')
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
