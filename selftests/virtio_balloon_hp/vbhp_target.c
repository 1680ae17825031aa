// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_target - the balloon follows the host: when the host has set a
 * target, the balloon reaches it within a deadline and stays there with
 * nothing in flight.
 *
 * Usage: vbhp_target [-w SECONDS]   (deadline, default 120)
 *
 * Skips when the host set no target, when the balloon holds below target
 * after an on-demand deflate (it waits for the host to write a target),
 * and when the target asks for more than the guest can give (inflation
 * stops at the reserve: see reserve_mb).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vbhp_lib.h"

#define PAGES_PER_MiB	256
#define STALLS		3	/* inflate rounds stopped at the reserve, 1 s apart */

static long long mib(long long pages)
{
	return pages / PAGES_PER_MiB;
}

int main(int argc, char **argv)
{
	long long t0, target, cur0, stalls0, ms;
	struct vbhp_dbg d;
	long wait_s = 120;
	int opt;

	while ((opt = getopt(argc, argv, "w:")) != -1) {
		if (opt == 'w' && atol(optarg) > 0)
			wait_s = atol(optarg);
		else
			ksft_exit_fail_msg("usage: %s [-w SECONDS > 0]\n", argv[0]);
	}
	ksft_print_header();
	vbhp_require(VBHP_NEED_ROOT | VBHP_NEED_DEVICE | VBHP_NEED_DEBUGFS);
	vbhp_dbg_read(&d);
	target = vbhp_dbg(&d, "target");
	cur0 = vbhp_dbg(&d, "current");
	stalls0 = vbhp_dbg(&d, "inflate_stalls");
	if (!target && !cur0)
		ksft_exit_skip("the host has set no target (the balloon is empty)\n");
	if (vbhp_dbg(&d, "od_hold"))
		ksft_exit_skip("holding at %lld MiB (target %lld MiB) after on-demand deflate %s\n",
			       mib(cur0), mib(target), "until the host writes a target");
	ksft_print_msg("target %lld MiB, current %lld MiB, deadline %ld s\n",
		       mib(target), mib(cur0), wait_s);

	/* Until settled at the target, stalled at the reserve, or the deadline. */
	t0 = vbhp_now_ms();
	while (vbhp_dbg_stable(&d, 1000) || vbhp_dbg(&d, "current") != vbhp_dbg(&d, "target")) {
		if (vbhp_now_ms() - t0 > wait_s * 1000 ||
		    vbhp_dbg(&d, "inflate_stalls") >= stalls0 + STALLS)
			break;
	}
	ms = vbhp_now_ms() - t0;
	target = vbhp_dbg(&d, "target");
	if (vbhp_dbg(&d, "current") < target && vbhp_dbg(&d, "inflate_stalls") >= stalls0 + STALLS)
		ksft_exit_skip("target %lld MiB: more than the guest can give, %s %lld MiB%s\n",
			       mib(target), "inflation stopped at", mib(vbhp_dbg(&d, "current")),
			       " (the reserve)");
	ksft_set_plan(2);
	ksft_test_result(vbhp_dbg(&d, "current") == target,
			 "current %lld pages reached target %lld pages (from %lld MiB to %lld MiB in %lld ms)\n",
			 vbhp_dbg(&d, "current"), target, mib(cur0), mib(target), ms);

	/* Settled means it stays: nothing moves for a second. */
	vbhp_sleep_ms(1000);
	cur0 = vbhp_dbg(&d, "current");
	vbhp_dbg_read(&d);
	ksft_test_result(vbhp_dbg(&d, "current") == cur0 && vbhp_dbg_idle(&d) &&
			 vbhp_dbg(&d, "target") == target,
			 "a second later: current %lld, target %lld pages, nothing in flight\n",
			 vbhp_dbg(&d, "current"), vbhp_dbg(&d, "target"));
	ksft_finished();
}
