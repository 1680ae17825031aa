"""The guest kernels: .cache/kernels.list, written by tests/setup/setup.sh."""
import bisect
import os

from . import CACHE


class Kernel:
    """One line of .cache/kernels.list: short name, ABI name, headers dir."""

    def __init__(self, short, kver, headers):
        self.short, self.kver, self.headers = short, kver, headers
        self.root = os.path.join(CACHE, 'kernels', kver)
        self._config = None
        self._symbols = None  # (address, name) of System.map's text symbols, sorted

    # Debian 12: /boot/vmlinuz-KVER and /lib/modules/KVER; Debian 13 moved the
    # modules to /usr/lib/modules/KVER, and from 7.x the image is
    # /usr/lib/modules/KVER/vmlinuz.
    @property
    def moddir(self):
        return self._first('usr/lib/modules/' + self.kver, 'lib/modules/' + self.kver)

    @property
    def vmlinuz(self):
        return self._first('boot/vmlinuz-' + self.kver, f'usr/lib/modules/{self.kver}/vmlinuz')

    def _first(self, *paths):
        """The first of paths (relative to the extracted kernel) that exists."""
        for p in paths:
            if os.path.exists(os.path.join(self.root, p)):
                return os.path.join(self.root, p)
        raise FileNotFoundError(f'none of {paths} in {self.root}: run tests/setup/setup.sh')

    def config(self, name):
        """The value of option @name in the kernel's .config ('y', 'm', a
        number or a quoted string), or None where it is not set."""
        if self._config is None:
            with open(os.path.join(self.headers, '.config')) as f:
                self._config = dict(line.rstrip('\n').split('=', 1) for line in f
                                    if line.startswith('CONFIG_'))
        return self._config.get(name)

    def checker_overhead_mib(self, mem_mib):
        """What a guest of @mem_mib MiB loses to the debug checkers: KASAN's
        shadow (1/8 of RAM) and about 64 MiB of lockdep, kmemleak and
        debugobjects state; 0 on a kernel without KASAN.  Guest adds it to
        QEMU's memory (and to the sizes it tells the host), so that a test
        sizes a debug guest as it sizes any other."""
        if self.config('CONFIG_KASAN') != 'y':
            return 0
        return (mem_mib // 7 + 64) // 2 * 2

    def symbolize(self, addr):
        """'function+0xoff' for a kernel text address, from the System.map
        beside the headers (a debug kernel's build has one); else the
        address in hex."""
        if self._symbols is None:
            self._symbols = []
            path = os.path.join(self.headers, 'System.map')
            if os.path.exists(path):
                with open(path) as f:
                    for line in f:
                        value, kind, name = line.split()[:3]
                        if kind in 'tTwW':
                            self._symbols.append((int(value, 16), name))
                self._symbols.sort()
        i = bisect.bisect_right(self._symbols, (addr, '\uffff')) - 1
        if i < 0 or addr - self._symbols[i][0] > 0x10000:
            return hex(addr)
        value, name = self._symbols[i]
        return f'{name}+{addr - value:#x}'

    def module(self, name):
        """Path of an in-tree module (.ko, .ko.xz or .ko.zst) of this kernel's image."""
        for dirpath, _, names in os.walk(os.path.join(self.moddir, 'kernel')):
            for suffix in ('.ko', '.ko.xz', '.ko.zst'):
                if name + suffix in names:
                    return os.path.join(dirpath, name + suffix)
        raise FileNotFoundError(f'no module {name} in {self.moddir}')

    def __repr__(self):
        return f'Kernel({self.short}, {self.kver})'


# Kernels that run every test: the oldest and the newest supported.  The
# others (Debian 13's 6.12, generic and cloud) run the matrix set
# (@test(matrix=True)) unless VBHP_FULL_KERNELS names them ("all": every
# kernel); a CI run of the whole suite on four kernels would not fit its hour.
FULL_KERNELS = ('6.1', '7.3')


def full_kernel(kernel):
    """Whether @kernel runs the whole suite, not only the matrix set."""
    wanted = os.environ.get('VBHP_FULL_KERNELS', ' '.join(FULL_KERNELS)).split()
    return 'all' in wanted or kernel.short in wanted


def _known_kernels():
    path = os.path.join(CACHE, 'kernels.list')
    if not os.path.exists(path):
        raise RuntimeError(f'{path} missing: run tests/setup/setup.sh')
    with open(path) as f:
        return {k.short: k for k in (Kernel(*line.split()) for line in f if line.strip())}


def setup_command(short):
    """The command that sets up kernel @short."""
    if short.endswith('-debug'):
        return f'tests/setup/debug-kernel.sh {short[:-len("-debug")]}'
    return f'VBHP_KERNELS={short} tests/setup/setup.sh'


def find_kernel(short):
    """The Kernel called short ('6.1', '6.12', '6.12-cloud', '7.3') in .cache/kernels.list."""
    known = _known_kernels()
    if short not in known:
        raise RuntimeError(f'kernel {short} not set up: run {setup_command(short)}')
    return known[short]


def kernels():
    """Kernels from .cache/kernels.list, restricted by env VBHP_KERNELS.  A
    debug build (tests/setup/debug-kernel.sh, short name '*-debug') runs only
    where VBHP_KERNELS names it: make check-debug."""
    known = _known_kernels()
    wanted = (os.environ.get('VBHP_KERNELS', '').split()
              or [s for s in known if not s.endswith('-debug')])
    missing = [s for s in wanted if s not in known]
    if missing:
        raise RuntimeError(f'kernels {missing} not set up: run '
                           + '; '.join(setup_command(s) for s in missing))
    return [known[s] for s in wanted]
