// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_check - check virtio_balloon_hp's own view of the balloon against
 * the guest's: the debugfs stats are complete and consistent, nothing is
 * left in flight, the held blocks add up to "current", and MemTotal moved
 * by exactly what the balloon holds (not at all with DEFLATE_ON_OOM).
 *
 * Usage: vbhp_check [-b BOOT_MEMTOTAL_KB] [-o PAGE_ORDER] [-t]
 *   -b  MemTotal before the balloon held anything.  Without it, the
 *       baseline comes from the reserve the driver computed at probe,
 *       when it held nothing: with reserve_mb=0 that is 1/32 of MemTotal
 *       unless clamped to 32 MiB or 1 GiB, which pins MemTotal down to
 *       31 pages (124 kB); otherwise that check skips.
 *   -o  the block order expected (default: the host's hp order, else the
 *       page_order parameter)
 *   -t  the balloon has settled at the host's target (current == target)
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vbhp_lib.h"

#define RESERVE_DIV	32			/* the driver's auto reserve */
#define RESERVE_MIN	(32L << 8)		/* pages: 32 MiB */
#define RESERVE_MAX	(1024L << 8)		/* pages: 1 GiB */
#define STABLE_MS	30000

/* MemTotal with the balloon empty, in kB: [*lo, *hi]; 0 if unknown. */
static int baseline(const struct vbhp_dbg *d, long boot_kb, long *lo, long *hi)
{
	long r = vbhp_dbg(d, "reserve_pages");

	if (boot_kb) {
		*lo = *hi = boot_kb;
		return 1;
	}
	if (vbhp_param("reserve_mb") || r <= RESERVE_MIN || r >= RESERVE_MAX)
		return 0;
	*lo = r * RESERVE_DIV * 4;
	*hi = (r * RESERVE_DIV + RESERVE_DIV - 1) * 4;
	return 1;
}

int main(int argc, char **argv)
{
	long boot_kb = 0, memtotal, lo, hi, want;
	int want_order = -1, settled = 0, doom, opt, o, max, order_bad = -1;
	long long held, cur;
	struct vbhp_dbg d;

	while ((opt = getopt(argc, argv, "b:o:td")) != -1) {
		if (opt == 'b')
			boot_kb = atol(optarg);
		else if (opt == 'o')
			want_order = atoi(optarg);
		else if (opt == 't')
			settled = 1;
		else if (opt != 'd')	/* -d: read from debugfs now, kept for old callers */
			ksft_exit_fail_msg("usage: %s [-b KB] [-o N] [-t]\n", argv[0]);
	}
	ksft_print_header();
	vbhp_require(VBHP_NEED_ROOT | VBHP_NEED_DEVICE | VBHP_NEED_DEBUGFS);
	ksft_set_plan(6);
	if (vbhp_dbg_stable(&d, STABLE_MS))
		ksft_print_msg("the balloon did not settle within %d s\n", STABLE_MS / 1000);

	max = vbhp_dbg(&d, "page_order");
	if (want_order < 0)
		want_order = vbhp_expected_order(&d);
	ksft_test_result(max == want_order, "page_order is %d (want %d)\n", max, want_order);
	ksft_test_result(vbhp_dbg_idle(&d), "no buffer in flight\n");

	cur = vbhp_dbg(&d, "current");
	held = vbhp_dbg_held_pages(&d);
	for (o = 0; o <= max; o++)
		if (vbhp_dbg_order(&d, "alloc", o) - vbhp_dbg_order(&d, "free", o) !=
		    vbhp_dbg_order(&d, "held", o))
			order_bad = o;
	ksft_test_result(held == cur, "held blocks add up to current: %lld == %lld pages\n",
			 held, cur);
	ksft_test_result(order_bad < 0, "per order, allocated - freed == held (bad: %d)\n",
			 order_bad);
	if (settled)
		ksft_test_result(cur == vbhp_dbg(&d, "target"), "current %lld == target %lld\n",
				 cur, vbhp_dbg(&d, "target"));
	else
		ksft_test_result_skip("current == target: not asked (-t): vbhp_target checks it\n");

	doom = vbhp_dbg(&d, "deflate_on_oom");
	memtotal = vbhp_meminfo_kb("MemTotal");
	want = memtotal + (doom ? 0 : cur * 4);
	if (!baseline(&d, boot_kb, &lo, &hi))
		ksft_test_result_skip("MemTotal: no baseline: no -b, %s %ld, reserve %lld MiB\n",
				      "reserve set or clamped: reserve_mb",
				      vbhp_param("reserve_mb"), vbhp_dbg(&d, "reserve_pages") >> 8);
	else
		ksft_test_result(want >= lo && want <= hi,
				 "MemTotal %ld kB + balloon %lld kB%s = %ld kB, %s %ld..%ld %s\n",
				 memtotal, cur * 4,
				 doom ? " (deflate-on-oom: not counted, stays in MemTotal)" : "",
				 want, "MemTotal with the balloon empty", lo, hi,
				 boot_kb ? "(-b)" : "(from the reserve)");
	ksft_finished();
}
