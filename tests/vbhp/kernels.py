"""The guest kernels: .cache/kernels.list, written by tests/setup/setup.sh."""
import os

from . import CACHE


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
