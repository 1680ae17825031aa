"""The QEMU a guest runs on: Debian's stock QEMU, or the reference host
(host/patches, built by host/build-qemu.sh) offering hp blocks.  The one
place that picks the binary, the accelerator and the balloon device's
properties."""
import contextlib
import os
import re
import subprocess

from . import CACHE

STOCK_QEMU = 'qemu-system-x86_64'
HP_QEMU = os.path.join(CACHE, 'qemu', 'bin', 'qemu-hp')  # host/build-qemu.sh
HP_ORDER = 9
HP_TRACE = 'virtio_balloon_hp_*'  # the reference host's trace events
HUGETLB_DIR = '/sys/kernel/mm/hugepages/hugepages-2048kB'  # the host's 2 MiB pool


def kvm_usable():
    """/dev/kvm alone is not enough: a nested PVM hypervisor (no vmx/svm flag)
    offers one that cannot run stock kernels."""
    with open('/proc/cpuinfo') as f:
        flags = re.search(r'^flags\s*:(.*)$', f.read(), re.M).group(1).split()
    return os.access('/dev/kvm', os.R_OK | os.W_OK) and bool({'vmx', 'svm'} & set(flags))


class Host:
    """hp: the reference host with hp-block-order=HP_ORDER (else stock QEMU);
    deflate_on_oom: the device offers VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
    reporting: it offers VIRTIO_BALLOON_F_REPORTING (free-page-reporting);
    page_poison: it offers VIRTIO_BALLOON_F_PAGE_POISON (QEMU's default);
    free_page_hint: it offers VIRTIO_BALLOON_F_FREE_PAGE_HINT (with the
    iothread QEMU requires for it);
    trace: a QEMU trace event pattern to log (Guest.trace() reads it);
    hugetlb: guest RAM backed by the host's 2 MiB hugetlb pages (a memfd
    backend; the pool must hold them: hugetlb_pool());
    guard: the guard host (reference host with guard=on, implies hp): hp
    blocks are unmapped from their inflate to their deflate, and a touch of
    one kills QEMU with SIGSEGV;
    reference: the reference host's binary even without hp, where its
    device speaks the stock protocol (hp-block-order off): a comparison of
    both protocols on one QEMU (make bench);
    hotplug: the balloon sits on a PCIe root port, so QMP device_del can
    unplug it (the root bus cannot);
    ack_delay_ms: the slow host (reference host's binary): every inflate and
    deflate buffer is used at once but returned this many ms later, so the
    guest keeps its buffers in flight that long."""

    def __init__(self, hp=False, deflate_on_oom=False, trace=None, reporting=False,
                 page_poison=True, free_page_hint=False, hugetlb=False, guard=False,
                 reference=False, hotplug=False, ack_delay_ms=0):
        self.hp, self.deflate_on_oom, self.trace = hp or guard, deflate_on_oom, trace
        self.reporting, self.page_poison = reporting, page_poison
        self.free_page_hint = free_page_hint
        self.hugetlb, self.guard, self.hotplug = hugetlb, guard, hotplug
        self.ack_delay_ms = ack_delay_ms
        self.qemu = HP_QEMU if self.hp or reference or ack_delay_ms else STOCK_QEMU

    def balloon_device(self):
        """The -device value of the balloon (QOM id balloon0)."""
        return ('virtio-balloon-pci,id=balloon0' + f',hp-block-order={HP_ORDER}' * self.hp
                + ',deflate-on-oom=on' * self.deflate_on_oom
                + ',free-page-reporting=on' * self.reporting
                + ',page-poison=off' * (not self.page_poison)
                + ',free-page-hint=on,iothread=vbhp-io' * self.free_page_hint
                + ',guard=on' * self.guard
                + f',ack-delay-ms={self.ack_delay_ms}' * bool(self.ack_delay_ms)
                + ',bus=vbhp-port' * self.hotplug)

    def argv(self, mem_mib, smp, trace_log):
        """QEMU's command line up to the guest's own files and sockets: binary,
        machine, accelerator (KVM when usable, else multi-threaded TCG),
        memory, CPUs, the balloon device and the trace log."""
        kvm = kvm_usable()
        argv = [self.qemu, '-machine', 'q35', '-accel', 'kvm' if kvm else 'tcg,thread=multi',
                '-cpu', 'host' if kvm else 'max', '-m', str(mem_mib), '-smp', str(smp)]
        if self.hotplug:
            argv += ['-device', 'pcie-root-port,id=vbhp-port,chassis=1']
        argv += ['-device', self.balloon_device()]
        if self.free_page_hint:
            argv += ['-object', 'iothread,id=vbhp-io']
        if self.hugetlb:
            argv += ['-object', f'memory-backend-memfd,id=vbhp-ram,size={mem_mib}M,'
                     'hugetlb=on,hugetlbsize=2M', '-machine', 'memory-backend=vbhp-ram']
        if self.trace:
            argv += ['-d', f'trace:{self.trace}', '-D', trace_log]
        return argv

    def version(self):
        """First line of the binary's --version."""
        out = subprocess.run([self.qemu, '--version'], capture_output=True, text=True).stdout
        return out.splitlines()[0]


def hugetlb_free():
    """Free pages in the host's 2 MiB hugetlb pool."""
    with open(os.path.join(HUGETLB_DIR, 'free_hugepages')) as f:
        return int(f.read())


@contextlib.contextmanager
def hugetlb_pool(pages):
    """Grow the host's 2 MiB hugetlb pool by @pages for the duration (root
    only), and shrink it back to what it was after; yields the pages the
    kernel really added (fewer when host memory is fragmented)."""
    path = os.path.join(HUGETLB_DIR, 'nr_hugepages')
    with open(path) as f:
        old = int(f.read())
    try:
        with open(path, 'w') as f:
            f.write(str(old + pages))
        with open(path) as f:
            yield int(f.read()) - old
    finally:
        with open(path, 'w') as f:
            f.write(str(old))
