#!/usr/bin/python3
"""make bench: virtio_balloon_hp side by side with the in-tree virtio_balloon.

Same guest kernel, same workload, one variant after the other in one run:
  in-tree      the kernel's own virtio_balloon, stock QEMU
  hp-o0        virtio_balloon_hp page_order=0, stock QEMU
  hp-o9        virtio_balloon_hp page_order=9, stock QEMU (4 KiB frames)
  hp-o9-hp     virtio_balloon_hp page_order=9, patched QEMU (hp blocks)
Stock QEMU is Debian's qemu-system-x86_64; the patched one is host/'s
QEMU 10.0 with hp-block-order=9, so the last column also changes QEMU.

Usage: PYTHONPATH=tests bench/run.py [--quick] [--out DIR]   (what make bench runs)
  --quick   2 GiB only, one run, first kernel: asserts every variant
            reaches its target (the smoke run make check does)
Writes DIR/results.md and DIR/inflate-<kernel>.png (default: bench/).
"""
import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import time

from vbhp import MiB
from vbhp.balloon import INTREE_MODULE, Balloon, alloc_ms, balloon_guest, guest_files
from vbhp.build import build_module
from vbhp.hosts import Host, kvm_usable
from vbhp.kernels import kernels

HERE = os.path.dirname(os.path.abspath(__file__))

GiB = 1024 * MiB
VARIANTS = (  # name, module, parameters, patched QEMU
    ('in-tree', 'intree', '', False),
    ('hp-o0', 'hp', 'page_order=0', False),
    ('hp-o9', 'hp', 'page_order=9', False),
    ('hp-o9-hp', 'hp', 'page_order=9', True),
)
INFLATE_SHARE = 0.75
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
        with open(f'/proc/{self.g.proc.pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def host_buffers(self):
        """Virtqueue buffers QEMU popped so far (its virtqueue_pop trace)."""
        return self.g.trace().count('virtqueue_pop')

    def free_huge_mib(self):
        """Guest free memory in blocks of order >= 9, from /proc/buddyinfo."""
        mib = 0
        for line in self.g.sh('cat /proc/buddyinfo').splitlines():
            counts = [int(c) for c in line.split()[4:]]
            mib += sum(c << (o - 8) for o, c in enumerate(counts) if o >= 9)
        return mib

    def move(self, size, timeout=900):
        """Set the guest size; return seconds until the host sees it."""
        return self.b.reach(size, timeout, interval=POLL)

    def cycle(self):
        """Inflate 75% and deflate to empty; the costs of both."""
        small = self.ram - int(self.ram * INFLATE_SHARE) // (2 * MiB) * (2 * MiB)
        moved = (self.ram - small) / GiB
        c0 = (self.guest_cpu(), self.qemu_cpu(), self.host_buffers())
        inflate = self.move(small)
        deflate = self.move(self.ram)
        c1 = (self.guest_cpu(), self.qemu_cpu(), self.host_buffers())
        return dict(inflate=inflate, deflate=deflate, gibs=moved / inflate,
                    dgibs=moved / deflate, guest_cpu=c1[0] - c0[0],
                    qemu_cpu=c1[1] - c0[1], bufs_per_gib=(c1[2] - c0[2]) / (2 * moved))


def boot(kernel, variant, ram_gib, init_on_alloc, files):
    return balloon_guest(kernel, ram_gib * 1024, hp=variant[3], files=files,
                         append=f'init_on_alloc={init_on_alloc}', trace='virtqueue_pop')


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
                       append='init_on_alloc=0') as g:
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
    """All measurements for one kernel: {(variant, key): value}."""
    files = guest_files(kernel, extra=[kernel.module('virtio_balloon'),
                                       build_module(kernel, 'floor')])
    res = {}
    plan = [(s, 0, runs) for s in sizes] + ([] if quick else [(4, 1, runs)])
    for ram, init, n in plan:
        for v in VARIANTS:
            progress(f'{kernel.short}: {v[0]:9} {ram:2} GiB init_on_alloc={init} x{n}')
            with boot(kernel, v, ram, init, files) as g:
                run = Run(g, v)
                if not quick and ram == 4 and v[0] == 'hp-o9':
                    for order in (9, 0):
                        res[('floor', f'{init}-{order}')] = floor_times(g, 3072, order)
                run.load()
                huge0 = run.free_huge_mib()
                cycles = [run.cycle() for _ in range(n)]
                res[(v[0], f'{ram}-{init}')] = cycles
                if ram == 4 and init == 0:
                    res[(v[0], 'frag')] = (huge0, run.free_huge_mib())
                    res[(v[0], 'thp')] = thp_workload(g, run)
                assert_clean(g, v)
    for v in VARIANTS if not quick else ():
        progress(f'{kernel.short}: {v[0]:9}  2 GiB 1 GiB allocation under a full balloon')
        res[(v[0], 'od')] = ondemand(kernel, v, files)
    return res


def med(cycles, key):
    vals = [c[key] for c in cycles]
    return statistics.median(vals), max(vals) - min(vals)


def fmt(v, spread=None, unit=''):
    s = f'{v:.2f}{unit}'
    return s + (f' ±{spread / 2:.2f}' if spread else '')


def ratio(base, v, higher_better):
    if not base or not v:
        return '—'
    return f'{(v / base if higher_better else base / v):.2f}×'


def table(res, sizes, quick):
    """Markdown rows: metric, then value and ratio for each variant."""
    names = [v[0] for v in VARIANTS]
    head = '| metric | in-tree | ' + ' | '.join(f'{n} | ratio' for n in names[1:]) + ' |'
    rows = [head, '|' + ' --- |' * (2 + 2 * (len(names) - 1))]

    def row(label, key, metric, higher_better, unit=''):
        vals = [med(res[(n, key)], metric) if (n, key) in res else None for n in names]
        base = vals[0][0] if vals[0] else None
        cells = [fmt(*vals[0], unit) if vals[0] else '—']
        for v in vals[1:]:
            cells += [fmt(*v, unit) if v else '—', ratio(base, v[0] if v else None, higher_better)]
        rows.append(f'| {label} | ' + ' | '.join(cells) + ' |')

    keys = [f'{s}-0' for s in sizes] + ([] if quick else ['4-1'])
    for key in keys:
        ram, init = key.split('-')
        tag = f'{ram} GiB, init_on_alloc={init}'
        row(f'inflate 75%, s ({tag})', key, 'inflate', False)
        row(f'inflate GiB/s ({tag})', key, 'gibs', True)
        row(f'deflate, s ({tag})', key, 'deflate', False)
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


def od_cell(o):
    full = f'{o["full"]}' if o['full'] else 'failed or > 120 s'
    empty = f'{o["empty"]} ms' if o['empty'] else 'failed'
    return (f'{full} ({o["held"]} MiB held; empty: {empty})'
            + ('; OOM kill' if o['killed'] else ''))


def plot(res, sizes, kernel, out):
    """inflate GiB/s against RAM size, one line per variant (gnuplot)."""
    data = os.path.join(out, f'.inflate-{kernel.short}.dat')
    with open(data, 'w') as f:
        for s in sizes:
            f.write(f'{s} ' + ' '.join(f'{med(res[(v[0], f"{s}-0")], "gibs")[0]:.3f}'
                                      for v in VARIANTS) + '\n')
    png = os.path.join(out, f'inflate-{kernel.short}.png')
    lines = ', '.join(f"'{data}' using 1:{i + 2} with linespoints lw 2 title '{v[0]}'"
                      for i, v in enumerate(VARIANTS))
    script = (f"set terminal png size 800,500; set output '{png}'; "
              f"set title 'Inflate 75% of guest RAM, Debian {kernel.kver}, QEMU TCG, init_on_alloc=0'; "
              "set xlabel 'guest RAM (GiB)'; set ylabel 'GiB/s'; set logscale x 2; "
              f"set xtics ({', '.join(str(s) for s in sizes)}); set key left top; set grid; "
              f"plot {lines}")
    subprocess.run(['gnuplot', '-e', script], check=True)
    os.unlink(data)
    return os.path.basename(png)


def versions():
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                if line.startswith('model name')), platform.machine())
    return (f'- machine: {os.cpu_count()} CPUs ({cpu}), '
            f'{os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // GiB} GiB, '
            f'{"KVM" if kvm_usable() else "QEMU TCG (no usable KVM)"}\n'
            f'- stock QEMU: {Host().version()}\n- patched QEMU: {Host(hp=True).version()} + host/patches')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--out', default=HERE)
    args = ap.parse_args()
    sizes, runs = ([2], 1) if args.quick else ([2, 4, 8, 16], 3)
    ks = kernels()[:1] if args.quick else kernels()
    t0 = time.monotonic()
    out = [f'# virtio_balloon_hp benchmark{" (quick)" if args.quick else ""}', '',
           'Generated by `make bench` (bench/run.py); do not edit by hand.', '',
           f'- date: {datetime.date.today()}', versions(),
           f'- workload: inflate {INFLATE_SHARE:.0%} of guest RAM from empty, deflate to empty; '
           f'{runs} cycles per boot, median ± half the spread; wall times from the host '
           '(QMP query-balloon polled every 10 ms)',
           '- ratio: how many times better than the in-tree driver (its time / ours, our rate / its)',
           '- buffers per GiB: QEMU\'s virtqueue_pop trace, inflate and deflate together',
           '- the hp-o9-hp column runs on the patched QEMU 10.0, the others on stock QEMU',
           '- on-demand deflate: 2 GiB guest, deflate-on-oom=on, init_on_alloc=0; the balloon '
           'asked for all it can hold, then vbhp_alloc allocates and touches 1 GiB', '']
    for k in ks:
        res = bench_kernel(k, sizes, runs, args.quick)
        out += [f'## Debian {k.kver}', ''] + table(res, sizes, args.quick) + ['']
        if not args.quick:
            floor = ', '.join(f'order {o} init_on_alloc={i}: {res[("floor", f"{i}-{o}")]:.2f} GiB/s'
                              for i in (0, 1) for o in (9, 0))
            out += [f'Allocation floor (vbhp_floor, 3 GiB of 4, no host traffic): {floor}.', '']
            out += [f'![inflate GiB/s against RAM]({plot(res, sizes, k, args.out)})', '']
    out.append(f'Whole run: {(time.monotonic() - t0) / 60:.1f} min.')
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write('\n'.join(out) + '\n')
    progress(f'done in {(time.monotonic() - t0) / 60:.1f} min: {os.path.join(args.out, "results.md")}')


if __name__ == '__main__':
    main()
