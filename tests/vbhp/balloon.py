"""Drive virtio_balloon_hp in a test guest and read both sides of it.

The host's view comes from QMP (query-balloon, BALLOON_CHANGE events, the
device's guest-stats); the guest's from /proc/meminfo, the driver's debugfs
file and the vbhp_check kselftest.  Every wait has a deadline and says what
it saw last when it runs out.
"""
import re
import time

from . import MiB, wait_until
from .build import build_module, selftest_progs
from .guest import Guest
from .hosts import HP_TRACE, Host
from .runner import Skip

MODULE = '/lib/vbhp/virtio_balloon_hp.ko'
HOOKS_MODULE = '/lib/vbhp/virtio_balloon_hp_hooks.ko'  # the test-hooks build (VBHP_TEST_HOOKS)
INTREE_MODULE = '/lib/vbhp/virtio_balloon.ko'  # the kernel's own driver, in guests that carry it
DEBUGFS = '/sys/kernel/debug/virtio_balloon_hp'
DRIVER = '/sys/bus/virtio/drivers/virtio_balloon_hp'  # the driver in sysfs: bind, unbind
BALLOON_DEV = '/machine/peripheral/balloon0'  # the balloon's QOM path (Host.balloon_device)
SETTLE_TIMEOUT = 240  # seconds; TCG inflates a few hundred MiB/s


def guest_files(kernel, hooks=False, extra=()):
    """Files for a test guest's /lib/vbhp: our module, the kselftest programs,
    @extra, and with @hooks the test-hooks build as virtio_balloon_hp_hooks.ko."""
    files = [build_module(kernel)] + selftest_progs() + list(extra)
    if hooks:
        files.append(build_module(kernel, 'hooks'))
    return files


def balloon_guest(kernel, mem_mib, hp=False, deflate_on_oom=False, hooks=False,
                  extra_files=(), files=None, trace=None, reporting=False, page_poison=True,
                  free_page_hint=False, hugetlb=False, guard=False, reference=False,
                  hotplug=False, ack_delay_ms=0, **kw):
    """A Guest with guest_files() (or @files) on Host(@hp, @deflate_on_oom,
    @reporting, @page_poison, @free_page_hint, @hugetlb, @guard, @reference,
    @hotplug, @ack_delay_ms):
    hp (and guard), the reference host with hp blocks of HP_ORDER, its hp
    trace events logged unless @trace names others."""
    if files is None:
        files = guest_files(kernel, hooks, extra_files)
    hp = hp or guard
    host = Host(hp, deflate_on_oom, trace=HP_TRACE if hp and trace is None else trace,
                reporting=reporting, page_poison=page_poison, free_page_hint=free_page_hint,
                hugetlb=hugetlb, guard=guard, reference=reference, hotplug=hotplug,
                ack_delay_ms=ack_delay_ms)
    return Guest(kernel=kernel, mem_mib=mem_mib, files=files, host=host, **kw)


def boot_ballooned(kernel, mem_mib, size, module=MODULE, params='page_order=9', append='',
                   **kw):
    """A balloon_guest booted ballooned: QEMU starts paused, is told to give
    the guest @size bytes (QMP balloon) before the guest's first
    instruction, and the initramfs loads @module with @params before the
    agent starts, as a guest image whose initramfs carries the driver does."""
    insmod = ','.join([module] + params.split())
    return balloon_guest(kernel, mem_mib, append=f'{append} vbhp_insmod={insmod}',
                         at_start=lambda g: g.qmp.cmd('balloon', value=g.host_size(int(size))),
                         **kw)


def od_pages(s):
    """4 KiB pages deflated on demand so far (shrinker, OOM notifier,
    ioctl), from the driver's stats @s."""
    return sum(s[f'od_{t}_pages'] for t in ('shrinker', 'oom', 'ioctl'))


def target_reached_at(g, size, timeout=300):
    """Seconds from QEMU's start to the BALLOON_CHANGE event that reported
    @size (QEMU stamps each event with the host's wall clock when it
    happens, before its rate limit holds it back)."""
    ev = g.qmp.wait_event('BALLOON_CHANGE', lambda e: g.guest_size(e['data']['actual']) == size,
                          timeout)
    ts = ev['timestamp']
    return ts['seconds'] + ts['microseconds'] / 1e6 - g.launched


def can_suspend(guest):
    """Whether suspend() can run: a kernel built without PM_DEBUG (Debian's
    cloud flavour) has no pm_test, and a real s2idle under QEMU here never
    wakes (an RTC alarm did not)."""
    return guest.run('test -e /sys/power/pm_test')[0] == 0


def suspend(guest, before=''):
    """Suspend to idle and resume, devices included (pm_test=devices): the
    virtio device is frozen (reset) and restored; the test is skipped
    where can_suspend() says no.  @before: shell commands run in the same
    guest command just before the suspend; returns their output."""
    if not can_suspend(guest):
        raise Skip('no /sys/power/pm_test (CONFIG_PM_DEBUG off): suspend cannot be '
                   'tested without a wakeup source')
    out = guest.sh(f'{before}echo devices > /sys/power/pm_test && echo freeze > /sys/power/state',
                   timeout=120)
    assert 'PM: suspend exit' in guest.sh('dmesg')
    return out


def fragment(guest, keep_free_mib=200, held_top_mib=0):
    """Start vbhp_fragment -H on all but @keep_free_mib of the guest's free
    memory and wait until it holds it: no free 2 MiB block is left, the free
    memory is single pages spread over every pageblock it filled.  With
    @held_top_mib, the highest frames it filled, that many MiB, are held
    whole and the holes lie below them (-l).  Returns the MiB it filled."""
    fill = guest.meminfo()['MemFree'] // 1024 - keep_free_mib
    low = f' -l {fill - held_top_mib}' if held_top_mib else ''
    guest.sh(f'vbhp_fragment -m {fill}{low} -H >/tmp/frag.log 2>&1 &')
    # a minute on 7.3, over two on a debug kernel beside another guest
    out = wait_until(lambda: guest.sh('cat /tmp/frag.log'), 300,
                     'the fragmenter to hold its memory', ok=lambda out: 'holding' in out)
    assert 'not ok' not in out, out
    guest.log(out)
    return fill


def unfragment(guest):
    """Stop the vbhp_fragment that fragment() started and wait until it is
    gone, its memory freed (its exit takes seconds on a debug kernel); check
    it passed."""
    guest.sh('killall vbhp_fragment')
    wait_until(lambda: guest.run('pidof vbhp_fragment')[0], 120,
               'the fragmenter to exit', ok=lambda rc: rc != 0)
    out = guest.sh('cat /tmp/frag.log')
    assert 'not ok' not in out and '# Totals' in out, out


def alloc_ms(out):
    """The time vbhp_alloc reported for its first round (ms), or None."""
    m = re.search(r'allocated \d+ MiB in (\d+) ms', out)
    return int(m.group(1)) if m else None


def trace_count(guest, event, since=0, **fields):
    """Trace lines of @event whose fields (e.g. queue='hp_inflate') match,
    from line @since of the trace on; returns them as dicts of field -> string."""
    found = []
    for line in guest.trace().splitlines()[since:]:
        name, _, rest = line.partition(' ')
        if not name.endswith(event):
            continue
        toks = rest.split()
        rec = {toks[i].rstrip(':'): toks[i + 1] for i in range(0, len(toks) - 1, 2)}
        if all(rec.get(k) == str(v) for k, v in fields.items()):
            found.append(rec)
    return found


def guarded_gpas(g):
    """Guest addresses of the blocks the host keeps unmapped now, from its
    virtio_balloon_hp_guard trace events."""
    gpas = set()
    for rec in trace_count(g, 'virtio_balloon_hp_guard'):
        (gpas.add if rec['op'] == 'protect' else gpas.discard)(int(rec['gpa'], 16))
    return gpas


def check_guard(g, b):
    """QEMU is alive and guards exactly the order-9 blocks the guest holds
    (none without the guard); return how many it guards."""
    assert g.proc.poll() is None, f'QEMU died: exit {g.proc.returncode}'
    held, guarded = b.stats()['held_o9'], len(guarded_gpas(g))
    want = held if g.host.guard else 0
    assert guarded == want, f'host guards {guarded} blocks, want {want} (order-9 blocks held {held})'
    return guarded


def use_freed_memory(g, b, mib):
    """Allocate and touch @mib MiB in the guest: after a deflate this runs
    over memory that was ballooned, which must be mapped again by now."""
    rc, out = g.run(f'vbhp_alloc -m {mib}', timeout=180)
    assert rc == 0, out
    check_guard(g, b)


class Balloon:
    """One guest's balloon, seen from the host and from the guest."""

    def __init__(self, guest):
        self.g = guest
        self.ram = guest.mem_mib * MiB
        self.doom = guest.host.deflate_on_oom
        self.order = None
        self.boot_kb = guest.meminfo()['MemTotal']
        if guest.run(f'test -e {DEBUGFS}')[0] == 0:  # booted ballooned: once it settled
            s = self.stats()
            self.order = s['page_order']
            self.boot_kb += 0 if self.doom else s['current'] * 4

    def load(self, params='page_order=9', module=MODULE):
        """insmod our module (or another build of it, or INTREE_MODULE)."""
        self.g.sh(f'insmod {module} {params}'.rstrip())
        if module != INTREE_MODULE:
            self.order = int(self.stats()['page_order'])

    def stats(self):
        """The driver's debugfs counters as a dict of ints."""
        out = self.g.sh(f'cat {DEBUGFS}')
        return {k.strip(): int(v) for k, v in
                (line.split(':', 1) for line in out.splitlines() if ':' in line)}

    def poll_guest_stats(self, seconds=1):
        """Have the host ask the driver for statistics every @seconds."""
        self.g.qmp.cmd('qom-set', path=BALLOON_DEV, property='guest-stats-polling-interval',
                       value=seconds)

    def guest_stats(self):
        """The device's guest-stats as QMP shows them: {'last-update': host
        time in whole seconds, 'stats': {'stat-...': value}}; a value of
        2**64 - 1 marks a statistic the guest did not send."""
        return self.g.qmp.cmd('qom-get', path=BALLOON_DEV, property='guest-stats')

    def last_update(self):
        """When the host last received statistics (host time, s; 0: never)."""
        return self.guest_stats()['last-update']

    def actual(self):
        """Guest memory size in bytes the device reports to the host (RAM - balloon)."""
        return self.g.guest_size(self.g.qmp.cmd('query-balloon')['actual'])

    def set_size(self, size):
        """Ask for a guest memory size in bytes, as `balloon` in QMP does: the
        host wants the guest to have this much."""
        self.g.qmp.cmd('balloon', value=self.g.host_size(int(size)))

    def reach(self, size, timeout=SETTLE_TIMEOUT, interval=0.2):
        """Set the size and wait until the host sees it (polling QMP every
        @interval s); return the seconds it took."""
        start = time.monotonic()
        self.set_size(size)
        wait_until(self.actual, timeout, f'QMP actual == {size}',
                   ok=lambda a: a == size, interval=interval)
        return time.monotonic() - start

    def settle(self, size, timeout=SETTLE_TIMEOUT):
        """Set the size and wait until both sides agree it is reached."""
        start = time.monotonic()
        self.reach(size, timeout)
        target = (self.ram - size) >> 12
        wait_until(self.stats, 30,
                   f'debugfs current == target == {target}, nothing in flight',
                   ok=lambda s: self._settled(s, target))
        self.g.qmp.wait_event('BALLOON_CHANGE',
                              lambda ev: self.g.guest_size(ev['data']['actual']) == size, 10)
        return time.monotonic() - start

    def host_follows(self):
        """The host's actual equals RAM minus what the guest holds, and the
        host got a BALLOON_CHANGE event saying so; returns that size."""
        want = self.ram - self.stats()['current'] * 4096
        wait_until(self.actual, 10, f'QMP actual == {want}', ok=lambda a: a == want)
        self.g.qmp.wait_event('BALLOON_CHANGE',
                              lambda ev: self.g.guest_size(ev['data']['actual']) == want, 10)
        return want

    @staticmethod
    def _settled(s, target):
        return (s['target'] == target and s['current'] == target and
                not s['inflate_inflight'] and not s['deflate_inflight'])

    def check(self, settled=True):
        """Run the in-guest consistency kselftest; raise with its output."""
        cmd = f'vbhp_check -b {self.boot_kb} -o {self.order}'
        cmd += ' -t' * settled + ' -d' * self.doom
        rc, out = self.g.run(cmd)
        assert rc == 0, f'{cmd} failed:\n{out}'
        return out

    def fill(self, stalls=1, size=64 * MiB, timeout=300):
        """Ask for far more than the guest can give and wait until the balloon
        holds all it can (@stalls inflate rounds stopped at the reserve, a
        second apart); return the stats."""
        self.set_size(size)
        return wait_until(self.stats, timeout,
                          f'{stalls} stalled inflate round(s): the balloon holds all it can',
                          ok=lambda s: s['inflate_stalls'] >= stalls)

    def unbind(self, timeout=120):
        """Unbind our driver from its device through sysfs (remove() runs:
        the balloon deflates and the device is reset); return the device."""
        dev = self.g.sh(f'basename $(readlink {DRIVER}/virtio*)').strip()
        self.g.sh(f'echo {dev} > {DRIVER}/unbind', timeout=timeout)
        assert self.g.run(f'test -e {DRIVER}/{dev}')[0] != 0, f'{dev} still bound after unbind'
        return dev

    def bind(self, dev, timeout=120):
        """Bind our driver to @dev again (probe() runs)."""
        self.g.sh(f'echo {dev} > {DRIVER}/bind', timeout=timeout)

    def held_below(self, order):
        """4 KiB pages held in blocks of order < @order."""
        s = self.stats()
        return sum(s[f'held_o{o}'] << o for o in range(order))
