#!/usr/bin/python3
"""make bench: virtio_balloon_hp side by side with the in-tree virtio_balloon.

Same guest kernel, same workload, one variant after the other in one run:
  in-tree      the kernel's own virtio_balloon
  hp-o0        virtio_balloon_hp page_order=0
  hp-o9        virtio_balloon_hp page_order=9 (4 KiB frames: the stock protocol)
  hp-o9-hp     virtio_balloon_hp page_order=9, hp blocks (hp-block-order=9)
The main table runs every column on one QEMU binary, the reference host's
(host/): without hp-block-order its device speaks the stock protocol.  A
smaller table runs the stock-protocol columns on Debian's QEMU, the host
users have today.  Boot to target: QEMU starts paused, is given 25% of the
guest's RAM, and the initramfs loads the driver (tests/cases/boot.py does
the same as a test).

Usage: PYTHONPATH=tests bench/run.py [--quick] [--sizes 2,4] [--runs N] [--out DIR] [--render]
  (make bench runs it without options)
  --quick   2 GiB only, one run, first kernel, main table only: asserts
            every variant reaches its target (the smoke run make check does)
  --sizes   guest RAM sizes in GiB (default 2,4,8,16), --runs cycles per
            boot (default 3): a shorter run of every table
  --render  the tables again from the figures the last run kept in
            .cache/bench-<kernel>.pickle, measuring nothing (give the
            options of that run)
Writes DIR/results.md and DIR/inflate-<kernel>.png, DIR/boot-<kernel>.png
(default: bench/).
"""
import argparse
import datetime
import os
import pickle
import platform
import re
import statistics
import subprocess
import time

from cases.hostpages import BALLOON_MIB, RAM_MIB, TOUCH_MIB, hugetlb_guest, inflate_freed
from vbhp import MiB
from vbhp.balloon import (INTREE_MODULE, MODULE, Balloon, alloc_ms, balloon_guest, boot_ballooned,
                          guest_files, target_reached_at)
from vbhp.build import build_module
from vbhp.hosts import Host, kvm_usable
from vbhp.kernels import kernels
from vbhp.runner import Skip

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(HERE), '.cache')

GiB = 1024 * MiB
VARIANTS = (  # name, module, parameters, hp blocks
    ('in-tree', 'intree', '', False),
    ('hp-o0', 'hp', 'page_order=0', False),
    ('hp-o9', 'hp', 'page_order=9', False),
    ('hp-o9-hp', 'hp', 'page_order=9', True),
)
STOCK_VARIANTS = VARIANTS[:3]  # the columns Debian's QEMU can serve
BOOT_VARIANTS = (VARIANTS[0], VARIANTS[2], VARIANTS[3])
STOCK_BOOT_VARIANTS = BOOT_VARIANTS[:2]
HUGETLB_VARIANTS = VARIANTS[:3] + (('hp-o9 whole_blocks=0', 'hp', 'page_order=9 whole_blocks=0',
                                    False),) + VARIANTS[3:]
INFLATE_SHARE = 0.75
WORKERS_CAP = 16  # inflate_workers=0 (auto): one per online CPU, at most this many
POLL = 0.01  # seconds between query-balloon polls while timing


def progress(msg):
    print(f'bench: {msg}', flush=True)


class Run:
    """One booted guest of one variant: times inflate/deflate cycles."""

    def __init__(self, g, variant):
        self.g, self.variant = g, variant
        self.b = Balloon(g)
        self.ram = g.mem_mib * MiB

    def load(self):
        _, module, params, _ = self.variant
        if module == 'intree':
            self.b.load('', module=INTREE_MODULE)
        else:
            self.b.load(params)

    def guest_cpu(self):
        """Busy CPU seconds of the guest so far, from its /proc/stat."""
        fields = self.g.sh('head -1 /proc/stat').split()[1:]
        busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # no idle, iowait
        return busy / 100.0

    def qemu_cpu(self):
        return self.g.qemu_status()['cpu_s']

    def host_buffers(self):
        """Virtqueue buffers QEMU popped so far (its virtqueue_pop trace)."""
        return self.g.trace().count('virtqueue_pop')

    def free_huge_mib(self):
        """Guest free memory in blocks of order >= 9, from /proc/buddyinfo."""
        return sum(c << (o - 8) for counts in self.g.buddyinfo().values()
                   for o, c in enumerate(counts) if o >= 9)

    def move(self, size, timeout=900):
        """Set the guest size; return seconds until the host sees it."""
        return self.b.reach(size, timeout, interval=POLL)

    def cycle(self):
        """Inflate 75% and deflate to empty; the costs of both, and what the
        inflate cost the host's memory: QEMU's page faults and its RSS peak
        above its RSS before (VmHWM, restarted first)."""
        small = kept_size(self.ram)
        moved = (self.ram - small) / GiB
        c0 = (self.guest_cpu(), self.qemu_cpu(), self.host_buffers())
        self.g.qemu_reset_peak()
        q0 = self.g.qemu_status()
        inflate = self.move(small)
        q1 = self.g.qemu_status()
        peak = max(0, q1['VmHWM'] - q0['VmRSS'])  # RSS may fall below its start: discards
        deflate = self.move(self.ram)
        c1 = (self.guest_cpu(), self.qemu_cpu(), self.host_buffers())
        return dict(inflate=inflate, deflate=deflate, gibs=moved / inflate,
                    dgibs=moved / deflate, guest_cpu=c1[0] - c0[0],
                    qemu_cpu=c1[1] - c0[1], bufs_per_gib=(c1[2] - c0[2]) / (2 * moved),
                    faults=q1['minflt'] - q0['minflt'], peak_mib=peak / MiB,
                    peak_pct=100 * peak / (moved * GiB))


def kept_size(ram):
    """What the guest keeps with INFLATE_SHARE of @ram ballooned (whole 2 MiB)."""
    return ram - int(ram * INFLATE_SHARE) // (2 * MiB) * (2 * MiB)


def boot(kernel, variant, ram_gib, init_on_alloc, files, stock=False):
    """A guest for @variant on the reference host's binary (Debian's QEMU
    with @stock)."""
    return balloon_guest(kernel, ram_gib * 1024, hp=variant[3], reference=not stock, files=files,
                         append=f'init_on_alloc={init_on_alloc}', trace='virtqueue_pop')


def boot_to_target(kernel, v, ram_gib, init, files, stock=False):
    """Boot ballooned: seconds from QEMU's start to the target (25% of RAM
    kept) and to the agent (the first process after the initramfs loaded
    the driver, told not to wait for the target: vbhp_boot_wait=0, so
    that the agent row compares the kernels' boots alike); QEMU's RSS peak
    and page faults by then.  The reference host's binary, Debian's QEMU
    with @stock."""
    ram = ram_gib * GiB
    module, params = (INTREE_MODULE, '') if v[1] == 'intree' else (MODULE, v[2])
    with boot_ballooned(kernel, ram_gib * 1024, kept_size(ram), module=module, params=params,
                        hp=v[3], reference=not stock, files=files,
                        append=f'init_on_alloc={init} vbhp_boot_wait=0') as g:
        reached = target_reached_at(g, kept_size(ram), timeout=900)
        q = g.qemu_status()
        assert_clean(g, v)
        return dict(target=reached, up=g.up_at - g.launched, hwm_mib=q['VmHWM'] / MiB,
                    faults=q['minflt'])


def workers_rate(kernel, v, files, workers):
    """Inflate GiB/s of @v with inflate_workers=@workers (4 GiB, init_on_alloc=1)."""
    with boot(kernel, v, 4, 1, files) as g:
        run = Run(g, v)
        run.b.load(f'{v[2]} inflate_workers={workers}')
        cycles = [run.cycle() for _ in range(3)]
        assert_clean(g, v)
        return statistics.median(c['gibs'] for c in cycles)


def hugetlb_freed(kernel, v):
    """MiB of host 2 MiB hugetlb pages freed when @v inflates BALLOON_MIB of
    a RAM_MIB guest whose RAM they back, after it touched TOUCH_MIB (the
    workload of tests/cases/hostpages.py); Debian's QEMU for the stock
    protocol, the reference host for hp blocks.  None: the host's pool
    could not grow."""
    try:
        with hugetlb_guest(kernel, hp=v[3]) as g:
            b = Balloon(g)
            module = INTREE_MODULE if v[1] == 'intree' else MODULE
            freed, _ = inflate_freed(g, lambda: b.load(v[2], module=module), b.reach)
            assert_clean(g, v)
            return freed
    except Skip as e:
        progress(f'  skipped: {e}')
        return None


def floor_times(g, mib, order):
    """Allocate-and-free floor in the guest (vbhp_floor); seconds to allocate."""
    g.run(f'insmod /lib/vbhp/vbhp_floor.ko mib={mib} order={order}')
    m = re.findall(r'order (\d+): (\d+) MiB allocated in (\d+) us', g.sh('dmesg'))[-1]
    return int(m[1]) / 1024 / (int(m[2]) / 1e6)  # GiB/s


def anon_huge_mib(g):
    with open(f'/proc/{g.proc.pid}/smaps_rollup') as f:
        return int(re.search(r'AnonHugePages:\s+(\d+)', f.read()).group(1)) // 1024


def thp_workload(g, run):
    """Touch most guest memory, then inflate half: host THPs before/after."""
    fill = g.mem_mib * 3 // 4
    g.sh(f'dd if=/dev/zero of=/tmp/fill bs=1M count={fill} 2>/dev/null; rm /tmp/fill',
         timeout=600)
    before = anon_huge_mib(g)
    run.move(run.ram // 2)
    after = anon_huge_mib(g)
    run.move(run.ram)
    return before, after


def wait_full(b, timeout=180):
    """Ask for far more than the guest can give; wait until the host sees
    the balloon stop growing (within 1 MiB for 3 s). Returns bytes held."""
    b.set_size(64 * MiB)
    last, since, t0 = None, time.monotonic(), time.monotonic()
    while time.monotonic() - since < 3 and time.monotonic() - t0 < timeout:
        a = b.actual()
        if last is None or abs(a - last) > MiB:
            last, since = a, time.monotonic()
        time.sleep(0.2)
    return b.ram - last


def ondemand(kernel, v, files):
    """1 GiB allocated and touched by a guest program, with the balloon
    empty and then holding all it can (2 GiB guest, deflate-on-oom=on)."""
    with balloon_guest(kernel, 2048, hp=v[3], deflate_on_oom=True, files=files,
                       reference=True, append='init_on_alloc=0') as g:
        g.expect_oom = True  # the in-tree driver may not keep the OOM killer away
        run = Run(g, v)
        run.load()
        res = dict(empty=alloc_1g_ms(g), held=wait_full(run.b) // MiB)
        res['full'] = alloc_1g_ms(g)
        res['killed'] = 'Killed process' in g.sh('dmesg')
        assert_clean(g, v)
        return res


def alloc_1g_ms(g):
    """ms for vbhp_alloc to allocate and touch 1 GiB; None if it failed or
    took more than 120 s."""
    rc, out = g.run('timeout 120 vbhp_alloc -m 1024', timeout=200)
    return alloc_ms(out) if rc == 0 else None


def assert_clean(g, v):
    problems = g.kernel_problems()
    assert not problems, f'{v[0]}: guest kernel problems: {problems[:3]}'


def bench_kernel(kernel, sizes, runs, quick):
    """All measurements for one kernel: {(variant, key): value}; keys
    'RAM-INIT' (reference host), 'stock-RAM-INIT' (Debian's QEMU),
    'boot-RAM-INIT', 'frag', 'thp', 'od', 'workers'."""
    files = guest_files(kernel, extra=[kernel.module('virtio_balloon'),
                                       build_module(kernel, 'floor')])
    res = {}
    plan = [(s, 0, False) for s in sizes] + ([] if quick else [(4, 1, False), (4, 0, True),
                                                               (4, 1, True)])
    for ram, init, stock in plan:
        for v in STOCK_VARIANTS if stock else VARIANTS:
            where = 'stock QEMU' if stock else 'reference host'
            progress(f'{kernel.short}: {v[0]:9} {ram:2} GiB init_on_alloc={init} x{runs} ({where})')
            with boot(kernel, v, ram, init, files, stock) as g:
                run = Run(g, v)
                if not quick and ram == 4 and v[0] == 'hp-o9' and not stock:
                    for order in (9, 0):
                        res[('floor', f'{init}-{order}')] = floor_times(g, 3072, order)
                run.load()
                huge0 = run.free_huge_mib()
                cycles = [run.cycle() for _ in range(runs)]
                res[(v[0], f'{"stock-" * stock}{ram}-{init}')] = cycles
                progress(f'  inflate {med(cycles, "inflate")[0]:.2f} s, deflate '
                         f'{med(cycles, "deflate")[0]:.2f} s, QEMU peak +'
                         f'{med(cycles, "peak_mib")[0]:.0f} MiB, {med(cycles, "faults")[0]:.0f} faults')
                if ram == 4 and init == 0 and not stock:
                    res[(v[0], 'frag')] = (huge0, run.free_huge_mib())
                    res[(v[0], 'thp')] = thp_workload(g, run)
                assert_clean(g, v)
    if quick:
        return res
    for v in VARIANTS:
        progress(f'{kernel.short}: {v[0]:9}  2 GiB 1 GiB allocation under a full balloon')
        res[(v[0], 'od')] = ondemand(kernel, v, files)
    for v in VARIANTS[2:]:
        progress(f'{kernel.short}: {v[0]:9}  4 GiB init_on_alloc=1, inflate_workers=1')
        res[(v[0], 'workers')] = workers_rate(kernel, v, files, 1)
        progress(f'  {res[(v[0], "workers")]:.2f} GiB/s')
    for v in HUGETLB_VARIANTS:
        progress(f'{kernel.short}: {v[0]:9}  host huge pages freed, hugetlb-backed guest')
        res[(v[0], 'hugetlb')] = hugetlb_freed(kernel, v)
        progress(f'  {res[(v[0], "hugetlb")]} MiB of {BALLOON_MIB}')
    for ram in sizes[1:]:
        for init in (0, 1):
            for v in BOOT_VARIANTS:
                progress(f'{kernel.short}: {v[0]:9} {ram:2} GiB init_on_alloc={init} boot to target')
                res[(v[0], f'boot-{ram}-{init}')] = [boot_to_target(kernel, v, ram, init, files)]
                progress(f'  {res[(v[0], f"boot-{ram}-{init}")][0]}')
    for init in (0, 1):
        for v in STOCK_BOOT_VARIANTS:
            progress(f'{kernel.short}: {v[0]:9}  4 GiB init_on_alloc={init} boot to target '
                     '(stock QEMU)')
            res[(v[0], f'stock-boot-4-{init}')] = [boot_to_target(kernel, v, 4, init, files, True)]
            progress(f'  {res[(v[0], f"stock-boot-4-{init}")][0]}')
    return res


def med(cycles, key):
    vals = [c[key] for c in cycles]
    return statistics.median(vals), max(vals) - min(vals)


def fmt(v, spread=None, digits=2):
    s = f'{v:.{digits}f}'
    return s + (f' ±{spread / 2:.{digits}f}' if spread else '')


def ratio(base, v, higher_better):
    if not base or not v:
        return '—'
    return f'{(v / base if higher_better else base / v):.2f}×'


def table(res, keys, variants, extras=True):
    """Markdown rows: metric, then value and ratio for each variant; the
    inflate rows of @keys ('[stock-]RAM-INIT'), with @extras the rows of
    the one-off measurements too."""
    names = [v[0] for v in variants]
    head = '| metric | in-tree | ' + ' | '.join(f'{n} | ratio' for n in names[1:]) + ' |'
    rows = [head, '|' + ' --- |' * (2 + 2 * (len(names) - 1))]

    def row(label, key, metric, higher_better, digits=2):
        """higher_better None: no ratio (a cost near 0, read as it is)."""
        vals = [med(res[(n, key)], metric) if (n, key) in res else None for n in names]
        base = vals[0][0] if vals[0] else None
        cells = [fmt(*vals[0], digits=digits) if vals[0] else '—']
        for v in vals[1:]:
            cells += [fmt(*v, digits=digits) if v else '—',
                      '—' if higher_better is None else
                      ratio(base, v[0] if v else None, higher_better)]
        rows.append(f'| {label} | ' + ' | '.join(cells) + ' |')

    for key in keys:
        ram, init = key.split('-')[-2:]
        tag = f'{ram} GiB, init_on_alloc={init}'
        row(f'inflate 75%, s ({tag})', key, 'inflate', False)
        row(f'inflate GiB/s ({tag})', key, 'gibs', True)
        row(f'deflate, s ({tag})', key, 'deflate', False)
        row(f'host page faults during the inflate, QEMU minflt ({tag})', key, 'faults', None, 0)
        row(f'QEMU RSS peak above its start during the inflate, MiB ({tag})',
            key, 'peak_mib', None, 0)
        row(f'the same, % of the memory ballooned ({tag})', key, 'peak_pct', None)
    if not extras:
        return rows
    for key in ('4-0',) if '4-0' in keys else keys[:1]:
        row(f'virtqueue buffers per GiB moved, host count ({key.split("-")[0]} GiB)',
            key, 'bufs_per_gib', False)
        row('guest CPU s per cycle', key, 'guest_cpu', False)
        row('QEMU CPU s per cycle', key, 'qemu_cpu', False)
    for what, label in (('frag', 'free MiB in order >= 9 blocks: before → after a cycle (4 GiB)'),
                        ('thp', 'QEMU AnonHugePages MiB: memory touched → half inflated (4 GiB)')):
        if (names[0], what) in res:
            cells = [f'{res[(n, what)][0]} → {res[(n, what)][1]}' for n in names]
            rows.append(f'| {label} | {cells[0]} | ' +
                        ' | '.join(f'{c} | —' for c in cells[1:]) + ' |')
    if (names[0], 'od') in res:
        ods = [res[(n, 'od')] for n in names]
        cells = [od_cell(ods[0])]
        for o in ods[1:]:
            cells += [od_cell(o), ratio(ods[0]['full'], o['full'], False)]
        rows.append('| 1 GiB allocated and touched under a full balloon, ms '
                    '(balloon held; same with an empty balloon) | ' + ' | '.join(cells) + ' |')
    return rows


def boot_table(res, sizes, variants=BOOT_VARIANTS, prefix='boot'):
    """Boot to target, one boot per cell, every column on one QEMU: keys
    '@prefix-RAM-INIT'."""
    names = [v[0] for v in variants]
    rows = ['| metric | in-tree | ' + ' | '.join(f'{n} | ratio' for n in names[1:]) + ' |',
            '|' + ' --- |' * (2 + 2 * (len(names) - 1))]
    for ram in sizes:
        for init in (0, 1):
            key, tag = f'{prefix}-{ram}-{init}', f'{ram} GiB, init_on_alloc={init}'
            for metric, label, digits in (('target', 'QEMU start to target, s', 1),
                                          ('up', 'QEMU start to the agent (userspace), s', 1),
                                          ('hwm_mib', 'QEMU RSS peak by the target, MiB', 0),
                                          ('faults', 'host page faults by the target', 0)):
                vals = [res[(n, key)][0][metric] if (n, key) in res else None for n in names]
                cells = [fmt(vals[0], digits=digits) if vals[0] is not None else '—']
                for v in vals[1:]:
                    cells += [fmt(v, digits=digits) if v is not None else '—',
                              ratio(vals[0], v, False) if metric == 'target' else '—']
                rows.append(f'| {label} ({tag}) | ' + ' | '.join(cells) + ' |')
    return rows


def workers_table(res):
    """Inflate rate with one worker against the default (one per vCPU)."""
    rows = ['| variant (4 GiB, init_on_alloc=1, 2 vCPUs) | 1 worker, GiB/s | '
            'auto (2 workers), GiB/s | ratio |', '| --- | --- | --- | --- |']
    for v in VARIANTS[2:]:
        one, auto = res[(v[0], 'workers')], med(res[(v[0], '4-1')], 'gibs')[0]
        rows.append(f'| {v[0]} | {one:.2f} | {auto:.2f} | {auto / one:.2f}× |')
    return rows


def hugetlb_table(res):
    """Host huge pages freed by the inflate, per variant."""
    rows = [f'| variant ({RAM_MIB} MiB guest on host 2 MiB hugetlb pages, {TOUCH_MIB} MiB '
            f'touched, {BALLOON_MIB} MiB inflated) | host | host huge pages freed, MiB | '
            '% of the ballooned |', '| --- | --- | --- | --- |']
    for v in HUGETLB_VARIANTS:
        freed = res[(v[0], 'hugetlb')]
        host = 'reference host (hp blocks)' if v[3] else 'Debian\'s QEMU'
        cells = ('—', '—') if freed is None else (f'{freed}', f'{max(freed, 0) * 100 // BALLOON_MIB}%')
        rows.append(f'| {v[0]} | {host} | ' + ' | '.join(cells) + ' |')
    return rows + ['', 'A negative figure: the guest took more huge pages from the host\'s pool '
                   'while it inflated than the inflate gave back.']


def extrapolation(res):
    """The model for a 512 GiB guest with 64 vCPUs, with this run's figures."""
    big = max(int(k.split('-')[0]) for n, k in res if n == 'hp-o9-hp' and k.endswith('-0')
              and k.split('-')[0].isdigit())
    z = res[('floor', '1-9')]  # GiB/s one vCPU allocates and zeroes at order 9
    hp = med(res[('hp-o9-hp', f'{big}-0')], 'inflate')[0] / (big * INFLATE_SHARE)  # s per GiB
    ball = 512 * INFLATE_SHARE

    def t(workers):
        return ball / (z * workers) + ball * hp

    return [f'Extrapolation, on paper, to a 512 GiB guest with 64 vCPUs that boots with '
            f'{ball:.0f} GiB ballooned on the reference host.  Model: T = B / (z × W) + B × h, '
            f'with B = {ball:.0f} GiB ballooned, z = {z:.2f} GiB/s (one vCPU allocating and '
            f'zeroing order-9 blocks, the floor above), W the inflate workers, and '
            f'h = {hp * 1000:.2f} ms per GiB (the hp-o9-hp inflate of {big} GiB at '
            f'init_on_alloc=0, where nothing is zeroed: the protocol and the host).  '
            f'init_on_alloc=0: T = B × h = {ball * hp:.1f} s.  init_on_alloc=1: '
            f'{t(1):.0f} s with one worker, {t(WORKERS_CAP):.0f} s with the default '
            f'({WORKERS_CAP} workers, its cap), {t(64):.0f} s with inflate_workers=64.  '
            'z and h are TCG figures from this machine, not a real host\'s: put those in '
            'the same model.  It holds only while zeroing scales with the workers '
            '(measured up to 2 here) and memory bandwidth is not the limit.']


def od_cell(o):
    full = f'{o["full"]}' if o['full'] else 'failed or > 120 s'
    empty = f'{o["empty"]} ms' if o['empty'] else 'failed'
    return (f'{full} ({o["held"]} MiB held; empty: {empty})'
            + ('; OOM kill' if o['killed'] else ''))


def plot(out, name, title, ylabel, xs, series):
    """A gnuplot PNG @name in @out: one line per (label, values) of @series
    against guest RAM sizes @xs; returns the file name."""
    data = os.path.join(out, f'.{name}.dat')
    with open(data, 'w') as f:
        for i, x in enumerate(xs):
            f.write(f'{x} ' + ' '.join(f'{vals[i]:.3f}' for _, vals in series) + '\n')
    png = os.path.join(out, f'{name}.png')
    lines = ', '.join(f"'{data}' using 1:{i + 2} with linespoints lw 2 title '{label}'"
                      for i, (label, _) in enumerate(series))
    script = (f"set terminal png size 800,500; set output '{png}'; set title '{title}'; "
              f"set xlabel 'guest RAM (GiB)'; set ylabel '{ylabel}'; set logscale x 2; "
              f"set xtics ({', '.join(str(x) for x in xs)}); set key left top; set grid; "
              f"plot {lines}")
    subprocess.run(['gnuplot', '-e', script], check=True)
    os.unlink(data)
    return os.path.basename(png)


def plots(res, sizes, kernel, out):
    """Inflate rate and boot-to-target time against guest RAM: markdown lines."""
    tcg = 'QEMU TCG' if not kvm_usable() else 'KVM'
    inflate = plot(out, f'inflate-{kernel.short}',
                   f'Inflate 75% of guest RAM, Debian {kernel.kver}, {tcg}, init_on_alloc=0',
                   'GiB/s', sizes,
                   [(v[0], [med(res[(v[0], f'{s}-0')], 'gibs')[0] for s in sizes])
                    for v in VARIANTS])
    boot = plot(out, f'boot-{kernel.short}',
                f'Boot with 75% ballooned: QEMU start to target, Debian {kernel.kver}, {tcg}',
                'seconds', sizes[1:],
                [(f'{v[0]} init_on_alloc={i}', [res[(v[0], f'boot-{s}-{i}')][0]['target']
                                                for s in sizes[1:]])
                 for i in (0, 1) for v in BOOT_VARIANTS])
    return [f'![inflate GiB/s against RAM]({inflate})', '',
            f'![boot to target against RAM]({boot})', '']


def versions(render=False):
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                if line.startswith('model name')), platform.machine())
    return (f'- machine: {os.cpu_count()} CPUs ({cpu}), '
            f'{os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // GiB} GiB, '
            f'{"KVM" if kvm_usable() else "QEMU TCG (no usable KVM)"}\n'
            f'- reference host: {Host(hp=True).version()} + host/patches (every column of '
            'the main and boot tables)\n'
            f'- stock QEMU: {Host().version()} (the stock QEMU table)'
            + ('\n- machine and binaries: those of the --render, not of the run' * render))


def kept_path(k, quick):
    """Where a run keeps the figures of kernel @k (quick runs apart)."""
    return os.path.join(CACHE, f'bench-{k.short}{"-quick" * quick}.pickle')


def figures(k, sizes, runs, args):
    """The figures of kernel @k and the minutes they took: measured now and
    kept in .cache/, or with --render those the last run kept."""
    path = kept_path(k, args.quick)
    if args.render:
        with open(path, 'rb') as f:
            kept = pickle.load(f)
        if (kept['sizes'], kept['runs']) != (sizes, runs):
            raise SystemExit(f'{path} holds a run with --sizes '
                             f'{",".join(map(str, kept["sizes"]))} --runs {kept["runs"]}: '
                             'give those')
        return kept['res'], kept['minutes']
    t0 = time.monotonic()
    res = bench_kernel(k, sizes, runs, args.quick)
    took = (time.monotonic() - t0) / 60
    os.makedirs(CACHE, exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(dict(res=res, minutes=took, sizes=sizes, runs=runs), f)
    return res, took


def run_date(ks, args):
    """Today, or with --render the day the kept figures were measured."""
    if not args.render:
        return datetime.date.today()
    path = kept_path(ks[-1], args.quick)
    return datetime.date.fromtimestamp(os.path.getmtime(path))


def write_results(out, lines):
    """results.md in @out, rewritten as each kernel ends."""
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--out', default=HERE)
    ap.add_argument('--sizes', help='guest RAM sizes in GiB, comma-separated (default 2,4,8,16; '
                    'the 4 GiB rows need 4 among them)')
    ap.add_argument('--runs', type=int, help='cycles per boot (default 3)')
    ap.add_argument('--render', action='store_true',
                    help='write the tables again from the figures the last run kept in .cache/ '
                    '(same kernels and options), measuring nothing')
    args = ap.parse_args()
    sizes, runs = ([2], 1) if args.quick else ([2, 4, 8, 16], 3)
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(',')]
    runs = args.runs or runs
    ks = kernels()[:1] if args.quick else kernels()
    os.makedirs(args.out, exist_ok=True)  # the plots go there as each kernel ends
    t0 = time.monotonic()
    out = [f'# virtio_balloon_hp benchmark{" (quick)" if args.quick else ""}', '',
           'Generated by `make bench` (bench/run.py); do not edit by hand.', '',
           f'- date: {run_date(ks, args)}', versions(args.render),
           f'- workload: inflate {INFLATE_SHARE:.0%} of guest RAM from empty, deflate to empty; '
           f'{runs} cycles per boot, median ± half the spread; wall times from the host '
           '(QMP query-balloon polled every 10 ms)',
           '- ratio: how many times better than the in-tree driver (its time / ours, our rate / its)',
           '- buffers per GiB: QEMU\'s virtqueue_pop trace, inflate and deflate together',
           '- host page faults: QEMU\'s minflt (/proc/PID/stat), each maps 4 KiB or a '
           '2 MiB THP; RSS peak: VmHWM, restarted (clear_refs 5) before each inflate',
           '- boot to target: QEMU started paused (-S), QMP balloon to 25% of RAM, cont; the '
           'initramfs loads the driver and does not wait for the target (vbhp_boot_wait=0; '
           'the package\'s initramfs does); the target time is QEMU\'s BALLOON_CHANGE stamp; '
           'one boot per cell; the stock QEMU table ends with the same boot on Debian\'s QEMU',
           '- on-demand deflate: 2 GiB guest, deflate-on-oom=on, init_on_alloc=0; the balloon '
           'asked for all it can hold, then vbhp_alloc allocates and touches 1 GiB', '']
    minutes = 0
    for k in ks:
        res, took = figures(k, sizes, runs, args)
        minutes += took
        keys = [f'{s}-0' for s in sizes] + ([] if args.quick else ['4-1'])
        out += [f'## Debian {k.kver}', '', '### The reference host, both protocols', '']
        out += table(res, keys, VARIANTS, not args.quick) + ['']
        if args.quick:
            continue
        floor = ', '.join(f'order {o} init_on_alloc={i}: {res[("floor", f"{i}-{o}")]:.2f} GiB/s'
                          for i in (0, 1) for o in (9, 0))
        out += [f'Allocation floor (vbhp_floor, 3 GiB of 4, no host traffic): {floor}.', '']
        out += ['### Debian\'s QEMU (stock protocol only)', '']
        out += table(res, ['stock-4-0', 'stock-4-1'], STOCK_VARIANTS, False) + ['']
        out += ['Boot with 75% of RAM ballooned, on Debian\'s QEMU:', '']
        out += boot_table(res, [4], STOCK_BOOT_VARIANTS, 'stock-boot') + ['']
        out += ['### Boot with 75% of RAM ballooned', ''] + boot_table(res, sizes[1:]) + ['']
        out += ['### Inflate workers', ''] + workers_table(res) + ['']
        out += ['### Host huge pages', ''] + hugetlb_table(res) + ['']
        out += extrapolation(res) + ['']
        out += plots(res, sizes, k, args.out)
        write_results(args.out, out + [f'Run so far: {minutes:.1f} min.'])
    write_results(args.out, out + [f'Whole run: {minutes:.1f} min.'])
    progress(f'done in {(time.monotonic() - t0) / 60:.1f} min: {os.path.join(args.out, "results.md")}')


if __name__ == '__main__':
    main()
