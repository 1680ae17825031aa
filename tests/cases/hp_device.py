"""The reference host's huge-block balloon device (host/), without a guest kernel.

QEMU runs with the qtest accelerator: these tests play the guest driver,
programming the virtio-pci device through port I/O and guest memory, so the
device side of the protocol (config field, queue layout, inflate/deflate of
2 MiB blocks, rejects, acks, trace events) is checked for real.  Each test
prints one line per check and fails naming the checks that failed.
Run by tests/run_tests.py (`tests/run_tests.py hp_device`).
"""
import functools
import os
import re
import signal
import struct
import subprocess
import tempfile
import threading
import time

from vbhp.hosts import HP_QEMU as QEMU
from vbhp.runner import test

F_MUST_TELL_HOST, F_STATS_VQ, F_REPORTING, F_HP_BLOCKS = 0, 1, 5, 20
F_VERSION_1 = 32
HP_FEATURES = (1 << F_STATS_VQ) | (1 << F_HP_BLOCKS)
S_ACK, S_DRIVER, S_DRIVER_OK, S_FEATURES_OK = 1, 2, 4, 8
S_NEEDS_RESET = 0x40
PCI_DEV = 4                      # -device ...,addr=04.0
IO_BAR = 0xc000                  # where we map the legacy I/O BAR
MEM_BAR = 0xfe000000             # where we map the modern memory BAR
RING_BASE = 0x100000             # vrings and buffers live in 1..2 MiB
QUEUE_SPACE = 0x20000             # per queue: a 1024-entry vring + buffers
MIB = 1 << 20
BLOCK = 2 * MIB                  # order 9



class Checks:
    """The checks of one test: each printed as a TAP comment as it is made;
    done() fails the test naming every check that failed."""

    def __init__(self):
        self.made, self.failed = 0, []

    def __call__(self, ok, what):
        self.made += 1
        if not ok:
            self.failed.append(what)
        print(("# ok     " if ok else "# FAILED ") + what, flush=True)

    def done(self):
        assert not self.failed, "%d of %d checks failed: %s" % (
            len(self.failed), self.made, "; ".join(self.failed))


def device_test(fn):
    """Register fn(tmp, check) as a test run once (no guest kernel): tmp is a
    directory for its trace files, check a Checks."""
    @functools.wraps(fn)
    def run():
        check = Checks()
        with tempfile.TemporaryDirectory() as tmp:
            fn(tmp, check)
        check.done()
    return test(run, per_kernel=False)


class QTest:
    """A QEMU under -accel qtest, spoken to over stdin/stdout."""

    def __init__(self, device, mem="256M", trace=None):
        args = [QEMU, "-machine", "pc", "-accel", "qtest", "-qtest", "stdio",
                "-qtest-log", "/dev/null",
                "-display", "none", "-nodefaults", "-m", mem,
                "-device", device + ",addr=%02x.0" % PCI_DEV]
        if trace:
            args += ["-trace", "virtio_balloon_hp_*,file=" + trace]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def cmd(self, line, deadline=None):
        """Send one qtest command and return its result; with deadline (s),
        kill QEMU if it has not answered by then (RuntimeError follows)."""
        timer = threading.Timer(deadline, self.p.kill) if deadline else None
        if timer:
            timer.start()
        try:
            return self._cmd(line)
        finally:
            if timer:
                timer.cancel()

    def _cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        while True:
            resp = self.p.stdout.readline()
            if not resp:
                raise RuntimeError("QEMU died: " + self.p.stderr.read())
            if not resp.startswith("IRQ"):
                break
        if not resp.startswith("OK"):
            raise RuntimeError("%s -> %s" % (line, resp.strip()))
        parts = resp.split()
        return parts[1] if len(parts) > 1 else None

    def close(self):
        """Stop QEMU (SIGTERM: a clean shutdown that flushes the trace)."""
        self.p.terminate()
        self.p.wait(timeout=30)
        self.p.stdin.close()
        err = self.p.stderr.read()
        return "\n".join(line for line in err.splitlines()
                         if "terminating on signal" not in line)

    def clock_step(self, ms):
        """Advance the virtual clock by @ms milliseconds (timers due run)."""
        self.cmd("clock_step %d" % (ms * 1000000))

    # port I/O
    def out(self, size, addr, val, deadline=None):
        self.cmd("out%s 0x%x 0x%x" % ("bwl"[size // 2], addr, val), deadline)

    def inp(self, size, addr):
        return int(self.cmd("in%s 0x%x" % ("bwl"[size // 2], addr)), 16)

    # guest memory
    def write(self, addr, data):
        self.cmd("write 0x%x 0x%x 0x%s" % (addr, len(data), data.hex()))

    def read(self, addr, size):
        return bytes.fromhex(self.cmd("read 0x%x 0x%x" % (addr, size))[2:])

    def memset(self, addr, size, val):
        self.cmd("memset 0x%x 0x%x 0x%x" % (addr, size, val))

    def writel(self, addr, val, size=4, deadline=None):
        self.cmd("write%s 0x%x 0x%x" % ({1: "b", 2: "w", 4: "l", 8: "q"}[size],
                                        addr, val), deadline)

    def readl(self, addr, size=4, deadline=None):
        return int(self.cmd("read%s 0x%x" % ({1: "b", 2: "w", 4: "l",
                                              8: "q"}[size], addr),
                            deadline), 16)

    # PCI config space of our device (mechanism #1)
    def cfg_addr(self, reg):
        self.out(4, 0xcf8, 0x80000000 | (PCI_DEV << 11) | (reg & ~3))
        return 0xcfc + (reg & 3)

    def cfg_read(self, size, reg):
        return self.inp(size, self.cfg_addr(reg))

    def cfg_write(self, size, reg, val):
        self.out(size, self.cfg_addr(reg), val)


class VirtQueue:
    """A split virtqueue in guest memory, driven by this script."""

    def __init__(self, qt, index, size, base):
        self.qt, self.index, self.size, self.base = qt, index, size, base
        self.desc = base
        self.avail = base + 16 * size
        self.used = (self.avail + 6 + 2 * size + 4095) & ~4095
        self.buf = self.used + 4096 + 8 * size       # buffers follow
        self.buf = (self.buf + 4095) & ~4095
        self.avail_idx = 0
        qt.memset(base, self.buf - base, 0)

    def add_out(self, chunks):
        """Make one element of out descriptors, one per chunk, available."""
        addr, n = self.buf, len(chunks)
        self.buf += sum((len(c) + 15) & ~15 for c in chunks)
        head = (self.avail_idx * 4) % self.size       # 4 descs per element
        for i, data in enumerate(chunks):
            self.qt.write(addr, data)
            nxt = head + i + 1
            flags = 1 if i < n - 1 else 0              # VRING_DESC_F_NEXT
            self.qt.write(self.desc + 16 * (head + i),
                          struct.pack("<QIHH", addr, len(data), flags,
                                      nxt if flags else 0))
            addr += (len(data) + 15) & ~15
        ring = self.avail + 4 + 2 * (self.avail_idx % self.size)
        self.qt.writel(ring, head, 2)
        self.avail_idx += 1
        self.qt.writel(self.avail + 2, self.avail_idx, 2)

    def add_overlapping(self, addr, length, count):
        """Make one element of count chained out descriptors available, each
        naming the same length bytes at addr (the first element only)."""
        assert self.avail_idx == 0 and count <= self.size
        self.qt.write(self.desc, b"".join(
            struct.pack("<QIHH", addr, length, 1 if i < count - 1 else 0,
                        i + 1 if i < count - 1 else 0)
            for i in range(count)))
        self.qt.writel(self.avail + 4, 0, 2)
        self.avail_idx = 1
        self.qt.writel(self.avail + 2, 1, 2)

    def used_idx(self, deadline=None):
        return self.qt.readl(self.used + 2, 2, deadline)

    def wait_used(self, want, deadline):
        """Wait until the device has used want elements, at most deadline s
        (QEMU is killed if it stops answering); return whether it did."""
        end = time.monotonic() + deadline
        while self.used_idx(max(end - time.monotonic(), 0.1)) < want:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True


class LegacyBalloon:
    """virtio-balloon-pci with disable-modern=on: the legacy I/O interface."""

    def __init__(self, qt):
        self.qt = qt
        qt.cfg_write(4, 0x10, IO_BAR | 1)
        qt.cfg_write(2, 0x04, 0x5)                     # I/O + bus master
        qt.out(1, IO_BAR + 0x12, 0)                    # reset
        qt.out(1, IO_BAR + 0x12, S_ACK | S_DRIVER)

    def host_features(self):
        return self.qt.inp(4, IO_BAR + 0x00)

    def set_features(self, f):
        self.qt.out(4, IO_BAR + 0x04, f)

    def config(self, off):
        return self.qt.inp(4, IO_BAR + 0x14 + off)     # no MSI-X

    def queue_size(self, i):
        self.qt.out(2, IO_BAR + 0x0e, i)
        return self.qt.inp(2, IO_BAR + 0x0c)

    def setup_queue(self, i):
        size = self.queue_size(i)
        vq = VirtQueue(self.qt, i, size, RING_BASE + i * QUEUE_SPACE)
        self.qt.out(4, IO_BAR + 0x08, vq.base >> 12)
        return vq

    def driver_ok(self):
        self.qt.out(1, IO_BAR + 0x12, S_ACK | S_DRIVER | S_DRIVER_OK)

    def notify(self, vq, deadline=None):
        self.qt.out(2, IO_BAR + 0x10, vq.index, deadline)


class ModernBalloon:
    """virtio-balloon-pci, virtio 1.x: common config through the caps."""

    def __init__(self, qt):
        self.qt = qt
        self.caps = {}
        ptr = qt.cfg_read(1, 0x34)
        while ptr:
            if qt.cfg_read(1, ptr) == 0x09:            # vendor specific
                cfg_type = qt.cfg_read(1, ptr + 3)
                self.caps.setdefault(cfg_type, (qt.cfg_read(1, ptr + 4),
                                                qt.cfg_read(4, ptr + 8)))
                if cfg_type == 2:                      # notify: multiplier
                    self.notify_mult = qt.cfg_read(4, ptr + 16)
            ptr = qt.cfg_read(1, ptr + 1)
        bar, _ = self.caps[1]
        qt.cfg_write(4, 0x10 + 4 * bar, MEM_BAR)
        qt.cfg_write(4, 0x14 + 4 * bar, 0)             # 64-bit BAR high
        qt.cfg_write(2, 0x04, 0x6)                     # memory + bus master
        self.common = MEM_BAR + self.caps[1][1]
        self.set_status(0)
        self.set_status(S_ACK | S_DRIVER)

    def set_status(self, s):
        self.qt.writel(self.common + 0x14, s, 1)

    def status(self):
        return self.qt.readl(self.common + 0x14, 1)

    def num_queues(self):
        return self.qt.readl(self.common + 0x12, 2)

    def host_features(self):
        f = 0
        for sel in (0, 1):
            self.qt.writel(self.common + 0x00, sel)
            f |= self.qt.readl(self.common + 0x04) << (32 * sel)
        return f

    def set_features(self, f):
        for sel in (0, 1):
            self.qt.writel(self.common + 0x08, sel)
            self.qt.writel(self.common + 0x0c, (f >> (32 * sel)) & 0xffffffff)

    def setup_queue(self, i):
        """Select queue i, place its rings and enable it (common config)."""
        c = self.common
        self.qt.writel(c + 0x16, i, 2)
        vq = VirtQueue(self.qt, i, self.qt.readl(c + 0x18, 2),
                       RING_BASE + i * QUEUE_SPACE)
        for off, addr in ((0x20, vq.desc), (0x28, vq.avail), (0x30, vq.used)):
            self.qt.writel(c + off, addr, 8)
        vq.notify_off = self.qt.readl(c + 0x1e, 2)
        self.qt.writel(c + 0x1c, 1, 2)
        return vq

    def notify(self, vq):
        bar, off = self.caps[2]
        assert bar == self.caps[1][0], "notify and common config share a BAR"
        self.qt.writel(MEM_BAR + off + vq.notify_off * self.notify_mult,
                       vq.index, 2)


def pfns(*values):
    return struct.pack("<%dI" % len(values), *values)


def trace_lines(path, event):
    with open(path) as f:
        return [line for line in f if re.search(r"\b%s\b" % event, line)]


def legacy_device(props, features, trace=None, mem="256M"):
    """QEMU with a legacy balloon (-device properties props), features
    negotiated, its 5 queues set up and DRIVER_OK set: (qt, dev, vqs)."""
    qt = QTest("virtio-balloon-pci,disable-modern=on," + props, mem=mem,
               trace=trace)
    dev = LegacyBalloon(qt)
    dev.set_features(features)
    vqs = [dev.setup_queue(i) for i in range(5)]
    dev.driver_ok()
    return qt, dev, vqs


@device_test
def hp_device_queues(tmp, check):
    """hp-block-order=9: feature bit, config field, five queues, discards of
    accepted blocks, rejects with reasons, acks, the 4 KiB path, trace events."""
    trace = os.path.join(tmp, "hp.trace")
    qt = QTest("virtio-balloon-pci,disable-modern=on,hp-block-order=9",
               trace=trace)
    dev = LegacyBalloon(qt)
    hf = dev.host_features()
    check(hf & (1 << F_HP_BLOCKS), "hp-block-order=9 offers feature bit 20")
    check(dev.config(16) == 9, "config hp_block_order @16 reads 9")
    dev.set_features((1 << F_MUST_TELL_HOST) | (1 << F_STATS_VQ) |
                     (1 << F_HP_BLOCKS))
    # (10.0.x stable forces every queue to 1024 entries: any size will do)
    sizes = [dev.queue_size(i) for i in range(6)]
    check(all(sizes[:5]) and sizes[5] == 0,
          "5 queues (inflate, deflate, stats, hp_inflate, hp_deflate): %s"
          % sizes)
    vqs = [dev.setup_queue(i) for i in range(5)]
    dev.driver_ok()
    ivq, hp_ivq, hp_dvq = vqs[0], vqs[3], vqs[4]

    # Guest RAM from 6 to 14 MiB gets a pattern; blocks 8 and 10 MiB go.
    for a in (6 * MIB, 8 * MIB, 10 * MIB, 12 * MIB):
        qt.memset(a, BLOCK, 0xa5)
    bad = [0x801,          # misaligned for order 9
           0x100000,       # 4 GiB: outside guest RAM (-m 256M)
           0x0,            # 0..2 MiB straddles the VGA/BIOS holes
           0xfffe00]       # near 64 GiB: nothing there
    hp_ivq.add_out([pfns(0x800, *bad, 0xa00)])
    dev.notify(hp_ivq)
    check(hp_ivq.used_idx() == 1, "hp_inflate buffer acknowledged")
    check(qt.read(8 * MIB, 16) == bytes(16) and
          qt.read(8 * MIB + BLOCK - 16, 16) == bytes(16) and
          qt.read(10 * MIB + MIB, 16) == bytes(16),
          "inflated blocks at 8 and 10 MiB discarded (read back as zero)")
    check(qt.read(12 * MIB, 16) == b"\xa5" * 16 and
          qt.read(8 * MIB - 16, 16) == b"\xa5" * 16 and
          qt.read(12 * MIB + BLOCK - 16, 16) == b"\xa5" * 16,
          "memory around the blocks untouched")

    # PFNs split across descriptors, one PFN straddling two of them.
    data = pfns(0xc00, 0x600, 0x400)
    hp_dvq.add_out([data[:6], data[6:]])
    dev.notify(hp_dvq)
    check(hp_dvq.used_idx() == 1, "hp_deflate buffer (2 descriptors) acked")
    check(qt.read(12 * MIB, 16) == b"\xa5" * 16,
          "deflate leaves guest memory alone")

    # 260 PFNs: the last 4 exceed the protocol's 256 and are rejected.
    hp_ivq.add_out([pfns(*([0x600] * 256 + [0x400] * 4))])
    # A 6-byte buffer: one PFN plus 2 stray bytes.
    hp_ivq.add_out([pfns(0x400) + b"\0\0"])
    dev.notify(hp_ivq)
    check(hp_ivq.used_idx() == 3, "oversized and odd-length buffers acked")

    # The 4 KiB path is still served.
    qt.memset(16 * MIB, 4096, 0x5a)
    ivq.add_out([pfns(16 * MIB >> 12)])
    dev.notify(ivq)
    check(ivq.used_idx() == 1 and qt.read(16 * MIB, 16) == bytes(16),
          "stock 4 KiB inflateq still works")
    err = qt.close()
    check(not err.strip(), "no error output from QEMU (%r)" % err[:200])

    bufs = trace_lines(trace, "virtio_balloon_hp_buffer")
    infl = trace_lines(trace, "virtio_balloon_hp_inflate")
    defl = trace_lines(trace, "virtio_balloon_hp_deflate")
    rej = trace_lines(trace, "virtio_balloon_hp_reject")
    bad_len = trace_lines(trace, "virtio_balloon_hp_bad_length")
    check(len(bufs) == 4, "4 hp buffer trace events (%d)" % len(bufs))
    check(any("queue: hp_inflate pfns: 6" in b for b in bufs) and
          any("queue: hp_deflate pfns: 3" in b for b in bufs) and
          any("pfns: 260" in b for b in bufs),
          "buffer events name the queue and the PFN count")
    check(len(infl) == 2 + 256 + 1 and "gpa: 0x800000 order: 9" in infl[0],
          "one inflate event per accepted block (%d)" % len(infl))
    check(len(defl) == 3 and "gpa: 0xc00000 order: 9" in defl[0],
          "one deflate event per block (%d)" % len(defl))
    reasons = [re.search(r"reason: (\S+)", r).group(1) for r in rej]
    check(reasons[:4] == ["misaligned", "outside-guest-ram",
                          "straddles-ram-region", "outside-guest-ram"],
          "malformed PFNs rejected with reasons: %s" % reasons[:4])
    ignored = trace_lines(trace, "virtio_balloon_hp_ignored")
    check(reasons[4:] == [] and len(ignored) == 1 and
          ignored[0].rstrip().endswith("ignored: 4"),
          "PFNs past 256 not read, one event counts them: %s %s"
          % (reasons[4:], [i.strip() for i in ignored]))
    check(len(bad_len) == 1, "odd buffer length traced")
    with open(os.path.join(tmp, "hp.trace")) as f:
        print("".join("#        | " + line for line in list(f)[:8]), end="")


@device_test
def hp_device_edges(tmp, check):
    """Order 1 blocks, and a block running past the end of RAM (255 MiB)."""
    trace = os.path.join(tmp, "edges.trace")
    qt, dev, vqs = legacy_device("hp-block-order=1", HP_FEATURES, trace,
                                 mem="255M")
    check(dev.config(16) == 1, "hp-block-order=1: config reads 1")
    qt.memset(8 * MIB, 6 * 4096, 0xa5)
    vqs[3].add_out([pfns(0x802, 0x803, 0xff00 - 2, 0xff00)])
    dev.notify(vqs[3])
    check(vqs[3].used_idx() == 1 and
          qt.read(8 * MIB + 2 * 4096, 4096) == bytes(4096) and
          qt.read(8 * MIB + 4 * 4096, 16) == b"\xa5" * 16 and
          qt.read(8 * MIB + 2 * 4096 - 16, 16) == b"\xa5" * 16,
          "order 1: exactly the 8 KiB block at pfn 0x802 discarded")
    qt.close()
    rej = [re.search(r"pfn: (\S+) order: 1 reason: (\S+)", r).groups()
           for r in trace_lines(trace, "virtio_balloon_hp_reject")]
    check(rej == [("0x803", "misaligned"), ("0xff00", "outside-guest-ram")],
          "order 1 rejects: %s" % rej)
    check(len(trace_lines(trace, "virtio_balloon_hp_inflate")) == 2,
          "order 1: the last block of RAM (pfn 0xfefe) accepted")

    trace = os.path.join(tmp, "end.trace")
    qt, dev, vqs = legacy_device("hp-block-order=9", HP_FEATURES, trace,
                                 mem="255M")
    vqs[3].add_out([pfns(0xfc00, 0xfe00)])     # 252 MiB fine, 254 straddles
    dev.notify(vqs[3])
    qt.close()
    rej = trace_lines(trace, "virtio_balloon_hp_reject")
    check(vqs and len(rej) == 1 and "pfn: 0xfe00" in rej[0] and
          "straddles-ram-region" in rej[0],
          "block across the end of RAM rejected: %s" % [r.strip() for r in rej])


@device_test
def hp_device_huge_element(tmp, check):
    """An element of 1000 overlapping 1 GiB descriptors (2^28 frame numbers
    each) is served in bounded time: the first 256 frame numbers count, the
    rest are not read, and one trace event says how many were ignored."""
    trace = os.path.join(tmp, "huge.trace")
    qt, dev, vqs = legacy_device("hp-block-order=9", HP_FEATURES, trace,
                                 mem="2G")
    blocks = [(8 + 2 * k) * MIB for k in range(4)]     # 8..14 MiB: counted
    for a in blocks + [16 * MIB]:                      # 16 MiB: past 256th
        qt.memset(a, BLOCK, 0xa5)
    frames = [blocks[i % 4] >> 12 for i in range(256)] + [(16 * MIB) >> 12]
    data, ndesc, gib = pfns(*frames), 1000, 1 << 30
    qt.write(gib, data + data[-4:] * (1024 - len(frames)))
    vqs[3].add_overlapping(gib, gib, ndesc)
    deadline, t0 = 30, time.monotonic()
    try:
        dev.notify(vqs[3], deadline)
        done = vqs[3].wait_used(1, deadline)
    except RuntimeError:          # QEMU stuck in the element: killed
        done = False
    took = time.monotonic() - t0
    check(done, "element of %d x 1 GiB (%d frame numbers) used in %.2f s "
          "(deadline %d s)" % (ndesc, ndesc * gib // 4, took, deadline))
    if not done:
        qt.p.kill()
        qt.close()
        return
    check(all(qt.read(a + BLOCK - 16, 16) == bytes(16) for a in blocks) and
          qt.read(16 * MIB, 16) == b"\xa5" * 16,
          "the 4 blocks named in the first 256 discarded, the 257th kept")
    qt.close()
    infl = trace_lines(trace, "virtio_balloon_hp_inflate")
    ignored = trace_lines(trace, "virtio_balloon_hp_ignored")
    rej = trace_lines(trace, "virtio_balloon_hp_reject")
    check(len(infl) == 256 and not rej,
          "256 inflate events, %d rejects (%d inflate events)"
          % (len(rej), len(infl)))
    check(len(ignored) == 1 and ignored[0].rstrip().endswith(
        "ignored: %d" % (ndesc * gib // 4 - 256)),
          "one event counts the ignored frame numbers: %s"
          % [i.strip() for i in ignored])


def unnegotiated_buffer(dev, qt, vqs, check, what):
    """Put a 2 MiB block on hp_inflate although F_HP_BLOCKS was not
    negotiated: it must be neither discarded nor used.  First, the 4 KiB
    inflateq works: the set-up but empty hp queues broke nothing."""
    qt.memset(16 * MIB, 4096, 0x5a)
    vqs[0].add_out([pfns(16 * MIB >> 12)])
    dev.notify(vqs[0])
    check(vqs[0].used_idx() == 1 and qt.read(16 * MIB, 16) == bytes(16),
          "%s: 4 KiB inflateq served with the hp queues set up" % what)
    qt.memset(8 * MIB, BLOCK, 0xa5)
    vqs[3].add_out([pfns(0x800)])
    dev.notify(vqs[3])
    check(vqs[3].used_idx() == 0 and
          qt.read(8 * MIB + MIB, 16) == b"\xa5" * 16,
          "%s: hp_inflate buffer without F_HP_BLOCKS neither used nor acted "
          "on (used idx %d)" % (what, vqs[3].used_idx()))


@device_test
def hp_device_unnegotiated(tmp, check):
    """A driver that did not negotiate F_HP_BLOCKS gets no service on the hp
    queues: the device reports an error (virtio 1.x: DEVICE_NEEDS_RESET)."""
    trace = os.path.join(tmp, "unneg.trace")
    qt, dev, vqs = legacy_device("hp-block-order=9", 1 << F_STATS_VQ, trace)
    unnegotiated_buffer(dev, qt, vqs, check, "legacy")
    err = qt.close()
    check("not negotiated" in err, "legacy: QEMU reports the error: %r"
          % err.strip()[:200])
    check(not trace_lines(trace, "virtio_balloon_hp_inflate"),
          "legacy: no inflate trace event")

    qt = QTest("virtio-balloon-pci,disable-legacy=on,hp-block-order=9")
    dev = ModernBalloon(qt)
    dev.set_features((1 << F_VERSION_1) | (1 << F_STATS_VQ))
    dev.set_status(S_ACK | S_DRIVER | S_FEATURES_OK)
    vqs = [dev.setup_queue(i) for i in range(5)]
    dev.set_status(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK)
    unnegotiated_buffer(dev, qt, vqs, check, "modern")
    check(dev.status() & S_NEEDS_RESET,
          "modern: status 0x%x has DEVICE_NEEDS_RESET" % dev.status())
    qt.close()


@device_test
def hp_device_stock(tmp, check):
    """Without hp-block-order the device is the stock one."""
    qt = QTest("virtio-balloon-pci,disable-modern=on")
    dev = LegacyBalloon(qt)
    hf = dev.host_features()
    check(not hf & (1 << F_HP_BLOCKS), "no hp-block-order: bit 20 not offered")
    check(dev.config(16) == 0xffffffff,
          "no hp-block-order: config is 16 bytes (read @16 is out of range)")
    sizes = [dev.queue_size(i) for i in range(4)]
    check(all(sizes[:3]) and sizes[3] == 0,
          "no hp-block-order: 3 queues as in stock QEMU")
    qt.close()


@device_test
def hp_device_modern_negotiation(tmp, check):
    """virtio 1.x: FEATURES_OK only when the driver accepts every queue
    feature the device offers; the number of queues follows."""
    base = (1 << F_VERSION_1) | (1 << F_STATS_VQ) | (1 << F_HP_BLOCKS)
    cases = [("hp-block-order=9", base, True, 5),
             ("hp-block-order=9,free-page-reporting=on", base, False, 6),
             ("hp-block-order=9,free-page-reporting=on",
              base | (1 << F_REPORTING), True, 6),
             ("hp-block-order=9", base & ~(1 << F_STATS_VQ), False, 5),
             ("free-page-reporting=on", (1 << F_VERSION_1), True, 4)]
    for props, feats, accepted, nq in cases:
        qt = QTest("virtio-balloon-pci,disable-legacy=on," + props)
        dev = ModernBalloon(qt)
        offered = dev.host_features()
        dev.set_features(feats & offered)
        dev.set_status(S_ACK | S_DRIVER | S_FEATURES_OK)
        ok = bool(dev.status() & S_FEATURES_OK)
        check(ok == accepted and dev.num_queues() == nq,
              "modern %s, driver features 0x%x: FEATURES_OK %s, %d queues"
              % (props, feats & offered, "accepted" if ok else "refused",
                 dev.num_queues()))
        qt.close()


@device_test
def hp_device_realize_errors(tmp, check):
    """Out-of-range hp-block-order and ack-delay-ms values, and guard
    without huge blocks, refuse to start the device."""
    for props, want in (("hp-block-order=10", "must be between 1 and 9"),
                        ("hp-block-order=256", "expects uint8"),
                        ("guard=on", "'guard' needs huge blocks"),
                        ("ack-delay-ms=60001", "must be between 0 and 60000")):
        p = subprocess.run([QEMU, "-machine", "pc", "-accel", "qtest",
                            "-display", "none", "-nodefaults", "-device",
                            "virtio-balloon-pci," + props],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode != 0 and want in p.stderr,
              "%s refused: %s" % (props, p.stderr.strip()))


@device_test
def hp_device_guard(tmp, check):
    """guard=on: an inflated block is unmapped until its deflate, for QEMU's
    own accessors too (qtest reads guest memory the way device emulation
    does); the memory next to it and a deflated block read normally; a
    read of a ballooned block kills QEMU with SIGSEGV."""
    trace = os.path.join(tmp, "guard.trace")
    qt, dev, vqs = legacy_device("hp-block-order=9,guard=on", HP_FEATURES,
                                 trace)
    hp_ivq, hp_dvq = vqs[3], vqs[4]
    qt.memset(6 * MIB, 4 * BLOCK, 0xa5)
    hp_ivq.add_out([pfns(0x800, 0xa00)])
    dev.notify(hp_ivq)
    check(hp_ivq.used_idx() == 1, "hp_inflate of 8 and 10 MiB acknowledged")
    check(qt.read(8 * MIB - 16, 16) == b"\xa5" * 16 and
          qt.read(12 * MIB, 16) == b"\xa5" * 16,
          "memory next to the guarded blocks readable")
    hp_dvq.add_out([pfns(0x800)])
    dev.notify(hp_dvq)
    check(hp_dvq.used_idx() == 1 and qt.read(8 * MIB, 16) == bytes(16),
          "the block at 8 MiB reads as zero once deflated")
    try:
        qt.read(10 * MIB + 4096, 16)
        died = None
    except RuntimeError:
        died = qt.p.wait(timeout=30)
    check(died == -signal.SIGSEGV,
          "reading the still ballooned block at 10 MiB kills QEMU: exit %s"
          % died)
    ops = [re.search(r"op: (\S+) gpa: (\S+)", line).groups()
           for line in trace_lines(trace, "virtio_balloon_hp_guard")]
    check(ops == [("protect", "0x800000"), ("protect", "0xa00000"),
                  ("unprotect", "0x800000")],
          "guard trace: %s" % ops)


@device_test
def hp_device_ack_delay(tmp, check):
    """ack-delay-ms=1000, the slow host: an inflate buffer on either
    protocol is served at once (its block reads as zero) but used only
    1000 ms of the virtual clock later, in the order the buffers came; a
    reset drops a buffer still held."""
    trace = os.path.join(tmp, "ack.trace")
    qt, dev, vqs = legacy_device("hp-block-order=9,ack-delay-ms=1000",
                                 HP_FEATURES, trace)
    ivq, hp_ivq = vqs[0], vqs[3]
    qt.memset(8 * MIB, 2 * BLOCK, 0xa5)
    hp_ivq.add_out([pfns(0x800)])
    dev.notify(hp_ivq)
    qt.clock_step(500)
    ivq.add_out([pfns(*range(0xa00, 0xc00))])  # the 4 KiB frames of 10 MiB
    dev.notify(ivq)
    check(qt.read(8 * MIB, 16) == bytes(16) and
          qt.read(12 * MIB - 16, 16) == bytes(16),
          "both blocks discarded as their buffers came")
    check(hp_ivq.used_idx() == 0 and ivq.used_idx() == 0,
          "neither buffer used yet")
    qt.clock_step(500)
    check(hp_ivq.used_idx() == 1 and ivq.used_idx() == 0,
          "1000 ms on: the hp buffer used, the 4 KiB one not yet")
    qt.clock_step(500)
    check(ivq.used_idx() == 1, "1500 ms on: the 4 KiB buffer used")
    hp_ivq.add_out([pfns(0xc00)])
    dev.notify(hp_ivq)
    qt.out(1, IO_BAR + 0x12, 0)                      # reset
    qt.clock_step(2000)
    err = qt.close()
    delayed = trace_lines(trace, "virtio_balloon_hp_ack_delayed")
    dropped = [re.search(r"pending: (\d+)", line).group(1)
               for line in trace_lines(trace, "virtio_balloon_hp_ack_dropped")]
    check(len(delayed) == 3 and dropped == ["1"] and not err,
          "trace: %d buffers held back, a reset dropped %s; stderr %r"
          % (len(delayed), dropped, err))
