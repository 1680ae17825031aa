"""Stress (issue 10): many random targets on the guard host, removals while
buffers are in flight, random module parameters, and, on the debug kernel
(make check-debug), injected allocation failures.  Each run prints its
seed; VBHP_SEED=N repeats one.  Run by tests/run_tests.py."""
import os
import random
import re
import time

from vbhp import MiB, wait_until
from vbhp.balloon import (DEBUGFS, DRIVER, Balloon, balloon_guest, can_suspend, check_guard,
                          od_pages, suspend, use_freed_memory)
from vbhp.runner import Skip, test

PAGE = 4096
SLOW_ACK_MS = 1000  # the slow host returns each buffer this long after using it
IN_FLIGHT_TIMEOUT = 30  # s: a target set to buffers out


def rng(g, what):
    """A seeded random generator for one test, its seed on the log."""
    seed = int(os.environ.get('VBHP_SEED', time.time_ns() % 1_000_000))
    g.log(f'{what}: seed {seed} (VBHP_SEED={seed} repeats it)')
    return random.Random(seed)


def random_size(r, ram):
    """A guest size between 3/8 of RAM (as much as a 1 GiB test guest can
    give, its kernel, initramfs and the reserve aside) and all of it: a
    whole number of 2 MiB blocks half the time, any number of 4 KiB pages
    otherwise."""
    size = r.randrange(ram * 3 // 8, ram + 1)
    return size - size % (2 * MiB if r.random() < 0.5 else PAGE)


def settled_and_guarded(g, b, size):
    """Set @size and wait until both sides agree; the driver's books are
    exact and the host guards exactly the blocks the guest holds.  Returns
    how many it guards."""
    b.settle(size)
    b.check()
    return check_guard(g, b)


@test
def stress_random_targets(kernel):
    """Guard host: 200 random targets, three in four replaced before they
    are reached (buffers in flight both ways, blocks split by unaligned
    targets).  Every fourth is waited for: then both sides agree, the
    driver's counts are exact and the host guards exactly the blocks the
    guest holds whole.  QEMU is alive throughout (no touch of a ballooned
    block), and all memory comes back usable at the end."""
    ram = 1024 * MiB
    with balloon_guest(kernel, ram // MiB, guard=True) as g:
        b = Balloon(g)
        b.load()
        r = rng(g, 'targets')
        settled = replaced = 0
        for i in range(200):
            size = random_size(r, ram)
            if i % 4 == 3:
                settled_and_guarded(g, b, size)
                settled += 1
            else:
                b.set_size(size)
                time.sleep(r.uniform(0, 0.3))  # let some of it go out, not all
                assert g.proc.poll() is None, f'QEMU died: exit {g.proc.returncode}'
                replaced += 1
        s = b.stats()
        g.log(f'{settled} targets reached and checked, {replaced} replaced mid-flight; '
              f'{s["splits"]} splits, {s["inflate_buffers"] + s["hp_inflate_buffers"]} '
              f'inflate and {s["deflate_buffers"] + s["hp_deflate_buffers"]} deflate buffers')
        assert settled_and_guarded(g, b, ram) == 0
        use_freed_memory(g, b, 700)


def buffers_out(s, way):
    """Buffers out on @way ('inflate' or 'deflate'), both protocols' queues,
    from the driver's debugfs counters @s."""
    return s[f'{way}_inflight'] + s[f'hp_{way}_inflight']


def remove_mid_flight(g, b, how, way, wait):
    """Set a target of 3/4 of RAM ballooned (@way 'inflate') or, from half
    of it, of an empty balloon ('deflate'), remove the driver (@how: rmmod
    or sysfs unbind) once wait() returns; the removal ends, the memory is
    all back, the host sees the balloon empty.  Returns whether the balloon
    was still busy just before the removal."""
    ram = g.mem_mib * MiB
    if way == 'inflate':
        b.set_size(ram // 4)
    else:
        b.settle(ram // 2)
        b.set_size(ram)
    wait()
    s = b.stats()
    busy = bool(buffers_out(s, way) or s['current'] != s['target'])
    if how == 'rmmod':
        g.sh('rmmod virtio_balloon_hp', timeout=120)
    else:
        dev = b.unbind()
    assert g.proc.poll() is None, f'QEMU died: exit {g.proc.returncode}'
    assert g.meminfo()['MemTotal'] == b.boot_kb, 'memory missing after the removal'
    wait_until(b.actual, 30, f'QMP actual == {ram} after {how}', ok=lambda a: a == ram)
    if how == 'rmmod':
        b.load()
    else:
        b.bind(dev)
    b.set_size(ram)  # the new driver starts from an empty balloon
    return busy


@test
def stress_remove_mid_flight(kernel):
    """Guard host: 6 removals of the driver, by rmmod and by sysfs unbind in
    turn, each a random moment into an inflate (the guest zeroes what it
    balloons, init_on_alloc's default, so the inflate lasts).  No removal
    hangs, QEMU survives (no ballooned block touched), MemTotal and the
    host's actual come back whole each time; the driver works after it.
    Removals mid-deflate, where an hp deflate is over too soon to hit at
    random, are in stress_slow_host."""
    with balloon_guest(kernel, 1024, guard=True) as g:
        b = Balloon(g)
        b.load()
        r = rng(g, 'removals mid-inflate')
        busy = sum(remove_mid_flight(g, b, ('rmmod', 'unbind')[i % 2], 'inflate',
                                     lambda: time.sleep(r.uniform(0, 1.5)))
                   for i in range(6))
        g.log(f'{busy} of 6 removals came while the inflate was under way')
        assert busy, 'no removal came while the balloon was busy'
        settled_and_guarded(g, b, 512 * MiB)


@test
def stress_pressure_during_inflate(kernel):
    """Guard host with deflate-on-oom: 4 times, the host asks for all the
    guest can give and, a random moment into that inflate, a program
    allocates and touches 384 MiB.  The program always gets its memory and
    nobody is OOM-killed (the runner fails the test on any OOM report);
    QEMU survives, so no block was used before its deflate was answered;
    the host's actual follows what the guest holds, and the books are
    exact after each round."""
    ram = 1024 * MiB
    with balloon_guest(kernel, ram // MiB, guard=True, deflate_on_oom=True) as g:
        b = Balloon(g)
        b.load()
        r = rng(g, 'pressure')
        gave = []
        for _ in range(4):
            b.set_size(64 * MiB)  # far more than the guest can give
            time.sleep(r.uniform(0, 1.0))
            before = od_pages(b.stats())
            rc, out = g.run('vbhp_alloc -m 384', timeout=300)
            assert rc == 0, out
            gave.append((od_pages(b.stats()) - before) >> 8)
            b.host_follows()
            b.check(settled=False)
            check_guard(g, b)
            b.settle(ram)  # the host's next target ends the hold; empty again
        g.log(f'MiB deflated on demand in each round: {gave}')
        assert sum(gave), 'no round put the balloon under pressure'


def in_flight(b, way):
    """Wait until the driver has @way ('inflate' or 'deflate') buffers out;
    return how many."""
    s = wait_until(b.stats, IN_FLIGHT_TIMEOUT, f'{way} buffers in flight',
                   ok=lambda s: buffers_out(s, way) > 0, interval=0.05)
    return buffers_out(s, way)


def suspend_mid_flight(g, way):
    """Suspend as soon as @way buffers are out; returns how many the driver
    had out as the suspend began.  The wait, the count and the suspend are
    one guest command: on a debug kernel two agent round trips outlasted
    the host's 1 s hold on the last buffer."""
    counts = f"grep -E '^(hp_)?{way}_inflight:' {DEBUGFS}"
    wait = (f'end=$(($(date +%s) + {IN_FLIGHT_TIMEOUT})); '
            f'until out=$({counts}); echo "$out" | grep -q ": *[1-9]" || '
            f'[ $(date +%s) -ge $end ]; do :; done; echo "$out"; ')
    out = suspend(g, before=wait)
    return sum(int(line.split(':')[1]) for line in out.splitlines() if '_inflight:' in line)


@test
def stress_slow_host(kernel):
    """The slow guard host returns every inflate and deflate buffer 1 s
    after using it, so buffers stay in flight.  With buffers out: an rmmod
    mid-inflate and a sysfs unbind mid-deflate (the balloon busy just
    before), a target that turns an inflate around, and a suspend
    mid-inflate and one mid-deflate (buffers out as the suspend began;
    where the kernel can be suspended).  No task hangs, QEMU survives (no
    ballooned block touched before its deflate was answered), no reset
    drops a buffer the host still held (the driver waited for its
    answers), MemTotal and the host's actual are exact after each, and
    the memory given back is usable."""
    ram = 2048 * MiB
    with balloon_guest(kernel, ram // MiB, guard=True, ack_delay_ms=SLOW_ACK_MS) as g:
        b = Balloon(g)
        b.load()
        seen = {}
        for how, way in (('rmmod', 'inflate'), ('unbind', 'deflate')):
            busy = remove_mid_flight(g, b, how, way,
                                     lambda: seen.update({f'{how} mid-{way}': in_flight(b, way)}))
            assert busy, f'{how} mid-{way}: the balloon was idle just before it'
        b.settle(ram // 2)
        b.set_size(ram // 4)
        seen['turned around mid-inflate'] = in_flight(b, 'inflate')
        settled_and_guarded(g, b, ram * 3 // 4)
        if can_suspend(g):
            for way, start, to in (('inflate', ram // 2, ram // 4),
                                   ('deflate', ram // 4, ram // 2)):
                b.settle(start)
                b.set_size(to)
                seen[f'suspend mid-{way}'] = suspend_mid_flight(g, way)
                assert seen[f'suspend mid-{way}'], f'no {way} buffer out as the suspend began'
                settled_and_guarded(g, b, to)
        else:
            g.log('no suspend: this kernel has no /sys/power/pm_test')
        trace = g.trace()
        held = [int(n) for n in re.findall(r'virtio_balloon_hp_ack_delayed .*pending: (\d+)',
                                           trace)]
        dropped = re.findall(r'virtio_balloon_hp_ack_dropped .*', trace)
        g.log(f'buffers out at each step: {seen}; the host held back {len(held)} buffers, '
              f'at most {max(held, default=0)} at once; dropped by a reset: {dropped}')
        assert not dropped, dropped
        b.settle(ram // 2)
        b.settle(ram)
        use_freed_memory(g, b, 1000)


# parameter -> values to draw from: valid ones and ones past each end
PARAMS = {
    'page_order': (0, 1, 4, 8, 9, 10, 11, 12, 64, 4294967295),
    'max_inflight': (0, 1, 2, 8, 64, 65, 1000),
    'inflate_workers': (0, 1, 2, 16, 64, 65),
    'reserve_mb': (0, 32, 4096),
    'whole_blocks': (0, 1),
}


@test
def module_parameter_fuzz(kernel):
    """40 random sets of module parameters.  A set either loads, and the
    balloon then inflates 64 MiB and deflates it exactly (no inflate with a
    reserve larger than the guest), or is refused with a log line naming
    the valid range; nothing in between, and no load leaves a trace."""
    with balloon_guest(kernel, 1024) as g:
        b = Balloon(g)
        r = rng(g, 'parameters')
        loaded = refused = 0
        for _ in range(40):
            params = ' '.join(f'{k}={r.choice(v)}' for k, v in PARAMS.items() if r.random() < 0.6)
            g.sh('dmesg -c >/dev/null')  # busybox: clear the ring buffer
            rc, out = g.run(f'insmod /lib/vbhp/virtio_balloon_hp.ko {params}')
            if rc:
                log = g.sh('dmesg')
                assert 'valid' in log, f'{params!r} refused with no reason: {out}\n{log}'
                assert g.run('test -e /sys/module/virtio_balloon_hp')[0] != 0, params
                refused += 1
                continue
            loaded += 1
            b.order = int(b.stats()['page_order'])
            if 'reserve_mb=4096' not in params:
                b.settle(960 * MiB)
                b.settle(1024 * MiB)
            b.check()
            g.sh('rmmod virtio_balloon_hp', timeout=120)
            assert g.meminfo()['MemTotal'] == b.boot_kb, params
        g.log(f'{loaded} sets loaded and worked, {refused} refused with the valid range named')
        assert loaded and refused, (loaded, refused)


# Fault injection (Documentation/fault-injection/): the debug kernel's
# fail_page_alloc and failslab, in debugfs.
FAULTS = '/sys/kernel/debug'
FAULT_ATTRS = ('fail_page_alloc', 'failslab')
FAULT_TIMES = 1_000_000  # the budget each attribute starts with: injected = budget - what is left
FAULT_LEFT = ' '.join(f'{FAULTS}/{a}/times' for a in FAULT_ATTRS)  # what is left, in FAULT_ATTRS order


def require_faults(kernel):
    """Skip unless the kernel injects allocation failures."""
    if not (kernel.config('CONFIG_FAIL_PAGE_ALLOC') and kernel.config('CONFIG_FAILSLAB')):
        raise Skip('no fail_page_alloc or failslab in this kernel: make check-debug runs this')


def quiet_faults(g):
    """Expect allocation failure reports, and have none per injection."""
    # no report per injected failure (a stack dump would be a kernel problem)
    g.sh(' && '.join(f'echo 0 > {FAULTS}/{a}/verbose' for a in FAULT_ATTRS))
    g.expect_alloc_failures = True


def module_text(g):
    """The module's code as [start, end): its lowest text symbol in
    /proc/kallsyms to its highest plus 4 KiB (kallsyms has no sizes)."""
    out = g.sh("grep -E ' [tT] .*\\[virtio_balloon_hp\\]$' /proc/kallsyms")
    addrs = [int(line.split()[0], 16) for line in out.splitlines()]
    assert addrs and min(addrs), f'no text addresses of virtio_balloon_hp in /proc/kallsyms: {out}'
    return min(addrs), max(addrs) + 4096


def aim_faults(g, probability):
    """Aim fail_page_alloc and failslab at the module: only page and slab
    allocations made with its code on the stack (the stacktrace filter),
    sleeping ones included, any order; @probability % of them fail.  With
    0, only a task's fail-nth makes one fail, and the filter still holds."""
    start, end = module_text(g)
    for a in FAULT_ATTRS:
        settings = {'times': FAULT_TIMES, 'interval': 1, 'space': 0, 'task-filter': 'N',
                    'require-start': start, 'require-end': end, 'ignore-gfp-wait': 'N',
                    'probability': probability}
        if a == 'fail_page_alloc':
            settings.update({'ignore-gfp-highmem': 'N', 'min-order': 0})
        g.sh(' && '.join(f'echo {v} > {FAULTS}/{a}/{k}' for k, v in settings.items()))


def faults_injected(g):
    """Failures injected since aim_faults(), by attribute."""
    out = g.sh(f'cat {FAULT_LEFT}')
    return {a: FAULT_TIMES - int(left) for a, left in zip(FAULT_ATTRS, out.split())}


def stop_faults(g):
    """Stop injecting; return how many failures each attribute injected."""
    g.sh(' && '.join(f'echo 0 > {FAULTS}/{a}/probability' for a in FAULT_ATTRS))
    return faults_injected(g)


@test
def stress_faults_during_inflate(kernel):
    """Debug kernel, guard host: one in ten page and slab allocations made
    from the module's code fails (fail_page_alloc, failslab), while the
    balloon inflates 3/4 of the guest and deflates it, twice.  Each
    target is still reached, the driver's books are exact, the host guards
    exactly the blocks held, and the memory comes back whole and usable."""
    ram = 1024 * MiB
    require_faults(kernel)
    with balloon_guest(kernel, ram // MiB, guard=True) as g:
        quiet_faults(g)
        b = Balloon(g)
        b.load()
        aim_faults(g, 10)
        for _ in range(2):
            settled_and_guarded(g, b, ram // 4)
            settled_and_guarded(g, b, ram)
        counts = stop_faults(g)
        s = b.stats()
        g.log(f'failures injected: {counts}; the driver counted {s["fallbacks"]} fallbacks')
        assert counts['fail_page_alloc'], 'no page allocation of the module failed'
        use_freed_memory(g, b, 700)


def bind_failing_nth(g, dev, n):
    """Bind the driver to @dev with the n-th allocation the writing task
    makes from the module's code failing (/proc/thread-self/fail-nth,
    under aim_faults()' filter: the driver's own allocations and the
    kernel's on its behalf, such as the virtqueues'), then unbind it if
    it bound.  All in one guest command: an agent round trip costs about
    0.4 s on the debug kernel, and the walk has a hundred points.
    Returns (bound, injected, MemTotal in kB, what is left: the device
    still bound, or the driver's debugfs; empty when nothing is)."""
    out = g.sh(f'before=$(cat {FAULT_LEFT}); '
               f'echo {n} > /proc/thread-self/fail-nth && echo {dev} 2>/dev/null > {DRIVER}/bind; '
               f'bound=$?; after=$(cat {FAULT_LEFT}); '
               f'if [ $bound = 0 ]; then echo {dev} > {DRIVER}/unbind; fi; '
               f'left=; test -e {DRIVER}/{dev} && left=device-bound; '
               f'test -e {DEBUGFS} && left="$left debugfs"; '
               f'[ "$before" = "$after" ]; injected=$?; '
               f"echo $bound $injected $(sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo) $left",
               timeout=120)
    bound, injected, memtotal, *left = out.splitlines()[-1].split()
    return bound == '0', injected == '1', int(memtotal), ' '.join(left)


@test
def faults_in_every_probe_allocation(kernel):
    """Debug kernel: bind the driver with its first, second, third ...
    allocation failing (fail-nth, aimed at the module's code), until a
    bind runs out of allocations to fail.  Each bind either fails and
    leaves nothing behind (device unbound, no debugfs, MemTotal whole) or
    copes with the failure and binds; after the walk the driver binds,
    inflates and deflates exactly, and kmemleak suspects nothing when the
    guest closes."""
    require_faults(kernel)
    with balloon_guest(kernel, 1024) as g:
        quiet_faults(g)
        b = Balloon(g)
        b.load()
        aim_faults(g, 0)
        dev = b.unbind()
        b.set_size(b.ram)  # no target: a bind that works starts no inflate
        refused = coped = 0
        for n in range(1, 2000):
            bound, injected, memtotal, left = bind_failing_nth(g, dev, n)
            if not injected:
                assert bound, f'bind failed with no failure injected (n={n})'
                break
            if bound:
                coped += 1  # e.g. a debugfs file missing: creating one may fail
            else:
                refused += 1
            assert not left, f'bind n={n} (bound: {bound}) left {left} behind after its unbind'
            assert memtotal == b.boot_kb, f'MemTotal {memtotal} kB after bind n={n}, not {b.boot_kb}'
        else:
            raise AssertionError('binds still failing after 2000 injection points')
        # the first allocation of probe() is its device struct: refused at n=1
        assert refused, 'no bind was refused: the walk injected nothing into probe()'
        g.log(f'{n - 1} allocations failed one at a time: {refused} binds refused cleanly, '
              f'{coped} coped and bound')
        b.bind(dev)  # each bind of the walk was undone: this one stays
        b.settle(256 * MiB)
        b.check()
        b.settle(1024 * MiB)
