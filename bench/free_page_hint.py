#!/usr/bin/python3
"""What a guest loses without free page hinting (VIRTIO_BALLOON_F_FREE_PAGE_HINT).

virtio_balloon_hp does not implement hinting.  This measures what that costs
a user at live migration, with the in-tree virtio_balloon as the yardstick,
all on the same QEMU (Debian's, stock) and guest kernel:
  in-tree, hint      the in-tree driver, the device offers free-page-hint
  in-tree, no hint   the in-tree driver, the device does not offer it
  hp, host hints     virtio_balloon_hp page_order=9, the device offers it
  hp, reporting      virtio_balloon_hp page_order=9, the device offers free
                     page reporting instead (free-page-reporting=on)
A 2 GiB guest touches 1536 MiB with a program and frees it (the memory is
then free in the guest and backed on the host, the case hinting is for),
then (with reporting, once the guest has reported what it freed) the host
migrates it to a file (QMP migrate to exec:cat, bandwidth
unlimited) and reports what QEMU counted: RAM bytes sent, 4 KiB pages sent
whole ("normal"), the migration's total time, and the file's size.

Usage: PYTHONPATH=tests bench/free_page_hint.py [--kernel SHORT]
Prints a Markdown table (README.md quotes it).
"""
import argparse
import os
import tempfile
import time

from vbhp import MiB, wait_until
from vbhp.balloon import INTREE_MODULE, MODULE, Balloon, balloon_guest, guest_files
from vbhp.hosts import Host
from vbhp.kernels import kernels

TOUCH_MIB = 1536
VARIANTS = (  # name, module, the device offers free-page-hint, free-page-reporting
    ('in-tree, hint', INTREE_MODULE, True, False),
    ('in-tree, no hint', INTREE_MODULE, False, False),
    ('hp, host hints', MODULE, True, False),
    ('hp, reporting', MODULE, False, True),
)


def migrate_to_file(g, path, timeout=600):
    """Migrate @g to @path; QEMU's RAM counters and total time once done."""
    g.qmp.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 40})
    g.qmp.cmd('migrate', uri=f'exec:cat > {path}')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = g.qmp.cmd('query-migrate')
        if info.get('status') in ('completed', 'failed', 'cancelled'):
            break
        time.sleep(0.2)
    assert info.get('status') == 'completed', f'migration did not complete: {info}'
    return info


def measure(kernel, variant, files):
    name, module, hint, reporting = variant
    with balloon_guest(kernel, 2048, free_page_hint=hint, reporting=reporting, files=files,
                       append='init_on_alloc=0') as g, \
            tempfile.TemporaryDirectory() as tmp:
        b = Balloon(g)
        b.load('' if module == INTREE_MODULE else 'page_order=9', module=module)
        g.sh(f'vbhp_alloc -m {TOUCH_MIB}', timeout=300)
        g.sh('sync; echo 3 > /proc/sys/vm/drop_caches')
        if reporting:  # the page reporting core works in passes 2 s apart
            # The counter also holds what was reported at load, before the
            # touch: count from here.
            r0 = b.stats()['report_pages']
            wait_until(lambda: (b.stats()['report_pages'] - r0) << 12, 120,
                       'most of the freed memory reported again',
                       ok=lambda n: n >= TOUCH_MIB * MiB * 3 // 4)
        path = os.path.join(tmp, 'migration')
        info = migrate_to_file(g, path)
        ram = info['ram']
        return dict(sent=ram['transferred'], normal=ram['normal'],
                    ms=info['total-time'], file=os.path.getsize(path))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kernel', help='kernel short name (default: the first)')
    args = ap.parse_args()
    ks = [k for k in kernels() if not args.kernel or k.short == args.kernel]
    assert ks, f'no kernel {args.kernel}'
    kernel = ks[0]
    files = guest_files(kernel, extra=[kernel.module('virtio_balloon')])
    res = {v[0]: measure(kernel, v, files) for v in VARIANTS}
    base = res['in-tree, hint']
    print(f'Free page hinting at migration: {kernel.kver}, {Host().version()}, '
          f'2 GiB guest, {TOUCH_MIB} MiB touched and freed before the migration.\n')
    print('| driver | RAM sent (MiB) | pages sent whole | migration (s) | file (MiB) '
          '| sent vs in-tree with hints |')
    print('|---|---|---|---|---|---|')
    for name, r in res.items():
        print(f'| {name} | {r["sent"] / MiB:.0f} | {r["normal"]} | {r["ms"] / 1000:.1f} '
              f'| {r["file"] / MiB:.0f} | {r["sent"] / base["sent"]:.2f}x |')


if __name__ == '__main__':
    main()
