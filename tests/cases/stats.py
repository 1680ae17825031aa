"""The statistics queue: every tag the guest kernel's uapi defines reaches the
host (QMP guest-stats) with the value the guest's /proc shows at that moment,
and statistics keep coming after a module reload and a device reset.  Run by
tests/run_tests.py."""
import glob
import os
import re
import time

from vbhp import MiB, wait_until
from vbhp.balloon import INTREE_MODULE, Balloon, balloon_guest
from vbhp.runner import test

# QEMU's guest-stats key of each tag, in tag order (hw/virtio/virtio-balloon.c
# balloon_stat_names; QEMU 7.2 knows the first 10, the reference host's 10.0 all 16).
STAT_KEYS = ('stat-swap-in', 'stat-swap-out', 'stat-major-faults', 'stat-minor-faults',
             'stat-free-memory', 'stat-total-memory', 'stat-available-memory',
             'stat-disk-caches', 'stat-htlb-pgalloc', 'stat-htlb-pgfail',
             'stat-oom-kills', 'stat-alloc-stalls', 'stat-async-scans', 'stat-direct-scans',
             'stat-async-reclaims', 'stat-direct-reclaims')
UNSET = 2 ** 64 - 1  # QEMU's value of a tag the guest did not send
# Values that move in an idle guest (MemFree and the like): the host's value
# must lie within this much of what the guest read before and after it.
GAUGES = ('stat-free-memory', 'stat-available-memory', 'stat-disk-caches')
GAUGE_SLACK = 16 * MiB
CACHE_MIB = 256  # clean page cache for the pressure to reclaim
HUGEPAGES = 4  # hugetlb pages the test allocates, so that stat-htlb-pgalloc is not 0


def uapi_tags(kernel):
    """VIRTIO_BALLOON_S_NR of the guest kernel's uapi header: how many tags it
    defines (in Debian's headers or their -common part, or, for a debug
    kernel's build directory, in the source tree it links to)."""
    base = os.path.dirname(kernel.headers)
    uapi = 'include/uapi/linux/virtio_balloon.h'
    for path in [os.path.join(kernel.headers, uapi), os.path.join(kernel.headers, 'source', uapi)] + \
            glob.glob(os.path.join(base, 'linux-headers-*-common', uapi)):
        if os.path.exists(path):
            with open(path) as f:
                return int(re.search(r'#define VIRTIO_BALLOON_S_NR\s+(\d+)', f.read()).group(1))
    raise FileNotFoundError(f'no uapi virtio_balloon.h for {kernel.kver} under {base}')


def proc_stats(g):
    """/proc/meminfo and /proc/vmstat, read in one go, as guest-stats values
    (bytes or counts, keyed as STAT_KEYS)."""
    meminfo, vm = g.meminfo_vmstat()
    kb = {k: v * 1024 for k, v in meminfo.items()}
    page = 4096
    return {
        'stat-swap-in': vm['pswpin'] * page, 'stat-swap-out': vm['pswpout'] * page,
        'stat-major-faults': vm['pgmajfault'],
        'stat-minor-faults': vm['pgfault'] - vm['pgmajfault'],
        'stat-free-memory': kb['MemFree'], 'stat-total-memory': kb['MemTotal'],
        'stat-available-memory': kb['MemAvailable'],
        'stat-disk-caches': vm['nr_file_pages'] * page,
        'stat-htlb-pgalloc': vm['htlb_buddy_alloc_success'],
        'stat-htlb-pgfail': vm['htlb_buddy_alloc_fail'],
        'stat-oom-kills': vm['oom_kill'],
        'stat-alloc-stalls': sum(v for k, v in vm.items() if k.startswith('allocstall_')),
        'stat-async-scans': vm['pgscan_kswapd'] * page,
        'stat-direct-scans': vm['pgscan_direct'] * page,
        'stat-async-reclaims': vm['pgsteal_kswapd'] * page,
        'stat-direct-reclaims': vm['pgsteal_direct'] * page,
    }


def stats_between(b):
    """The guest's /proc before, the first statistics the driver filled after
    that read, and /proc again: (before, host stats, after).  The host stamps
    last-update in whole seconds when the buffer arrives; one that arrives 2 s
    after the first read ended was filled after it."""
    before = proc_stats(b.g)
    read = time.time()
    host = wait_until(b.guest_stats, 30, f'guest-stats last-update >= {read:.0f} + 2',
                      ok=lambda s: s['last-update'] >= int(read) + 2, interval=0.1)
    return before, host['stats'], proc_stats(b.g)


def check_values(b, want):
    """Every one of the first @want tags arrived (present, not UNSET), with
    the value /proc showed: counters between the reads before and after,
    gauges within GAUGE_SLACK of them; returns the host's values."""
    before, host, after = stats_between(b)
    keys = STAT_KEYS[:want]
    missing = [k for k in keys if host.get(k, UNSET) == UNSET]
    assert not missing, f'tags the guest kernel defines did not arrive: {missing}; got {host}'
    off = {}
    for k in keys:
        lo, hi = sorted((before[k], after[k]))
        slack = GAUGE_SLACK if k in GAUGES else 0
        assert lo - slack <= host[k] <= hi + slack, \
            f'{k}: host {host[k]}, guest /proc {before[k]} before and {after[k]} after (slack {slack})'
        if k in GAUGES:
            off[k] = max(lo - host[k], host[k] - hi, 0) // 1024
    moved = [k for k in keys if before[k] != after[k]]
    b.g.log(f'{len(keys)} tags arrived: ' + ', '.join(f'{k[5:]}={host[k]}' for k in keys))
    b.g.log(f'moving between the reads: {moved}; gauges off their /proc range by (KiB): {off}')
    assert host['stat-htlb-pgalloc'] >= HUGEPAGES, host
    return host


def host_tags(b):
    """How many tags this QEMU shows in guest-stats."""
    return len([k for k in b.guest_stats()['stats'] if k in STAT_KEYS])


def sent_keys(b):
    """The guest-stats keys the guest sent in its last update."""
    return {k for k, v in b.guest_stats()['stats'].items() if v != UNSET}


def intree_keys(b):
    """The keys the kernel's own virtio_balloon sends, loaded and removed
    again before our driver comes."""
    loaded = time.time()
    b.load('', module=INTREE_MODULE)
    wait_until(b.last_update, 30, 'guest-stats from the in-tree virtio_balloon',
               ok=lambda t: t >= int(loaded) + 1)
    keys = sent_keys(b)
    b.g.sh('rmmod virtio_balloon', timeout=120)
    return keys


def reload_and_reset(b):
    """last-update advances after rmmod + insmod, and after a device reset:
    the guest unbinds the driver from the device and binds it again through
    sysfs (remove resets the device, probe sets it up anew; a QMP
    system_reset would reboot the guest, which the harness runs with
    -no-reboot)."""
    g = b.g
    g.sh('rmmod virtio_balloon_hp', timeout=120)
    loaded = time.time()
    b.load()
    t = wait_until(b.last_update, 30, 'guest-stats last-update after rmmod + insmod',
                   ok=lambda t: t >= int(loaded) + 1)
    g.log(f'last-update {t}, {t - loaded:.1f} s after insmod began')
    dev = b.unbind()
    bound = time.time()
    b.bind(dev)
    t = wait_until(b.last_update, 30, f'guest-stats last-update after unbind + bind of {dev}',
                   ok=lambda t: t >= int(bound) + 1)
    g.log(f'last-update {t}, {t - bound:.1f} s after bind of {dev} began')


def stats_case(kernel, hp):
    """The keys the in-tree driver sends; then ours, idle, and again after
    memory pressure, a module reload and a device reset.  The pressure reclaims CACHE_MIB of clean page cache (a brd ramdisk read
    through its block device) and ends in an OOM kill, which stalls
    allocations in direct reclaim: the OOM, stall, scan and reclaim tags
    are not 0 where the kernel defines them."""
    files = [kernel.module('brd'), kernel.module('virtio_balloon')]
    with balloon_guest(kernel, 1024, hp=hp, extra_files=files) as g:
        b = Balloon(g)
        g.sh(f'echo {HUGEPAGES} > /proc/sys/vm/nr_hugepages')
        b.poll_guest_stats()
        intree = intree_keys(b)
        loaded = time.time()
        b.load()
        wait_until(b.last_update, 30, 'guest-stats from virtio_balloon_hp',
                   ok=lambda t: t >= int(loaded) + 1)
        defined, shown = uapi_tags(kernel), host_tags(b)
        want = min(defined, shown)
        g.log(f'{kernel.short} uapi defines {defined} tags; {g.host.version()} shows {shown}')
        if shown < defined:
            g.log(f'this host cannot show the other {defined - shown} tags')
        check_values(b, want)
        sent = sent_keys(b)
        extra = sent - set(STAT_KEYS[:defined])
        assert not extra, f'tags past the kernel\'s uapi were sent: {extra}'
        assert sent == intree, f'in-tree driver sent {sorted(intree)}, ours {sorted(sent)}'
        g.log(f'the in-tree virtio_balloon sent the same {len(intree)} keys')
        # The last close of a block device drops its page cache: keep it open.
        g.sh(f'insmod /lib/vbhp/brd.ko rd_nr=1 rd_size={CACHE_MIB * 1024} && '
             '{ sleep 3600 </dev/ram0 >/dev/null 2>&1 & } && '
             'dd if=/dev/ram0 of=/dev/null bs=1M', timeout=120)
        g.log(f'ramdisk read: {g.meminfo()["Buffers"] // 1024} MiB of block device page cache')
        g.expect_oom = True
        rc, out = g.run('vbhp_alloc -m 1024', timeout=300)
        assert rc != 0 and re.search(r'Killed process \d+ \(vbhp_alloc\)', g.sh('dmesg')), \
            f'vbhp_alloc was not OOM-killed: exit {rc}\n{out}'
        reload_and_reset(b)
        host = check_values(b, want)
        for tags in (('stat-oom-kills',), ('stat-alloc-stalls',),
                     ('stat-async-scans', 'stat-direct-scans'),
                     ('stat-async-reclaims', 'stat-direct-reclaims')):
            if set(tags) <= set(STAT_KEYS[:want]):
                assert sum(host[t] for t in tags) > 0, f'{tags} all 0 after the pressure'


@test
def stats_every_tag_stock(kernel):
    """Stock QEMU: every tag the kernel defines and QEMU knows (7.2: 10)
    arrives with /proc's value; stats flow after reload and reset."""
    stats_case(kernel, hp=False)


@test
def stats_every_tag_hp(kernel):
    """The reference host (QEMU 10.0, 16 tags): every tag the kernel defines
    arrives with /proc's value; stats flow after reload and reset."""
    stats_case(kernel, hp=True)
