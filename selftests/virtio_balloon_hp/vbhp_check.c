// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_check - check virtio_balloon_hp's own view of the balloon against
 * the guest's: the debugfs stats are complete and consistent, nothing is
 * left in flight, the held blocks add up to "current", and MemTotal moved
 * by exactly what the balloon holds.
 *
 * Usage: vbhp_check -b BOOT_MEMTOTAL_KB [-o PAGE_ORDER] [-t] [-d]
 *   -t  the balloon has settled at the host's target (current == target)
 *   -d  DEFLATE_ON_OOM was negotiated: MemTotal must not move at all
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kselftest.h"

#define STATS_PATH	"/sys/kernel/debug/virtio_balloon_hp"
#define MAX_KEYS	256

static struct {
	char name[64];
	long long val;
} keys[MAX_KEYS];
static int nr_keys;

static int load_stats(void)
{
	FILE *f = fopen(STATS_PATH, "r");
	char line[128];

	if (!f)
		return -1;
	while (nr_keys < MAX_KEYS && fgets(line, sizeof(line), f))
		if (sscanf(line, "%63[^:]: %lld", keys[nr_keys].name,
			   &keys[nr_keys].val) == 2)
			nr_keys++;
	fclose(f);
	return 0;
}

/* The value of @name; a missing key fails the run at once. */
static long long dbg_val(const char *name)
{
	int i;

	for (i = 0; i < nr_keys; i++)
		if (!strcmp(keys[i].name, name))
			return keys[i].val;
	ksft_exit_fail_msg("debugfs has no \"%s\"\n", name);
	return -1;
}

static long long stat_order(const char *what, int order)
{
	char name[64];

	snprintf(name, sizeof(name), "%s_o%d", what, order);
	return dbg_val(name);
}

static long meminfo_kb(const char *field)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long kb = -1;
	size_t n = strlen(field);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':')
			kb = atol(line + n + 1);
	fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	long long held = 0, cur, order_bad = -1;
	long boot_kb = 0, memtotal;
	int want_order = -1, settled = 0, doom = 0, opt, o, max;

	while ((opt = getopt(argc, argv, "b:o:td")) != -1) {
		if (opt == 'b')
			boot_kb = atol(optarg);
		else if (opt == 'o')
			want_order = atoi(optarg);
		else if (opt == 't')
			settled = 1;
		else if (opt == 'd')
			doom = 1;
		else
			ksft_exit_fail_msg("usage: %s -b KB [-o N] [-t] [-d]\n",
					   argv[0]);
	}
	ksft_print_header();
	ksft_set_plan(6);
	if (load_stats())
		ksft_exit_fail_msg("cannot read " STATS_PATH "\n");

	max = dbg_val("page_order");
	ksft_test_result(want_order < 0 || max == want_order,
			 "page_order is %d\n", max);
	ksft_test_result(!dbg_val("inflate_inflight") && !dbg_val("deflate_inflight"),
			 "no buffer in flight\n");

	cur = dbg_val("current");
	for (o = 0; o <= max; o++) {
		held += stat_order("held", o) << o;
		if (stat_order("alloc", o) - stat_order("free", o) !=
		    stat_order("held", o))
			order_bad = o;
	}
	ksft_test_result(held == cur, "held blocks add up to current: %lld == %lld pages\n",
			 held, cur);
	ksft_test_result(order_bad < 0, "per order, allocated - freed == held (bad: %lld)\n",
			 order_bad);
	if (settled)
		ksft_test_result(cur == dbg_val("target"), "current %lld == target %lld\n",
				 cur, dbg_val("target"));
	else
		ksft_test_result_skip("not asked to check the target\n");

	memtotal = meminfo_kb("MemTotal");
	if (!boot_kb)
		ksft_test_result_skip("no boot MemTotal given\n");
	else
		ksft_test_result(memtotal == boot_kb - (doom ? 0 : cur * 4),
				 "MemTotal %ld kB, boot %ld kB, balloon %lld kB%s\n",
				 memtotal, boot_kb, cur * 4,
				 doom ? " (deflate-on-oom: stays in MemTotal)" : "");

	if (ksft_get_fail_cnt())
		ksft_exit_fail();
	ksft_exit_pass();
}
