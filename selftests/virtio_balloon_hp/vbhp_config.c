// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_config - what the guest can see of how virtio_balloon_hp was set
 * up: its module parameters are in range and in effect, and the features
 * negotiated with the host (sysfs) agree with what the driver uses
 * (debugfs).
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "vbhp_lib.h"

#define F_MUST_TELL_HOST	0
#define F_STATS_VQ		1
#define F_DEFLATE_ON_OOM	2
#define F_HP_BLOCKS		20	/* uapi/linux/virtio_balloon_hp.h */
#define DEVICE_BITS		24	/* bits 0..23 belong to the device type */
#define DRIVER_BITS		((1UL << F_MUST_TELL_HOST) | (1UL << F_STATS_VQ) | \
				 (1UL << F_DEFLATE_ON_OOM) | (1UL << F_HP_BLOCKS))
#define MAX_ORDER_X86		10
#define MiB_PAGES		256	/* 4 KiB pages in a MiB */

/* The negotiated device-type bits, from the device's sysfs "features". */
static unsigned long device_features(void)
{
	char path[PATH_MAX + 16], bits[160];
	unsigned long f = 0;
	int i;

	snprintf(path, sizeof(path), "%s/features", vbhp_device_dir());
	if (vbhp_read_line(path, bits, sizeof(bits)) || strlen(bits) < DEVICE_BITS)
		ksft_exit_fail_msg("cannot read %s\n", path);
	/* one character per bit, bit 0 first */
	for (i = 0; i < DEVICE_BITS; i++)
		if (bits[i] == '1')
			f |= 1UL << i;
	return f;
}

static int has(unsigned long f, int bit)
{
	return !!(f & (1UL << bit));
}

int main(void)
{
	long order = 0, inflight, reserve_mb, hp, doom, max, r, lo, hi;
	unsigned long f;
	struct vbhp_dbg d;

	ksft_print_header();
	vbhp_require(VBHP_NEED_ROOT | VBHP_NEED_DEVICE | VBHP_NEED_DEBUGFS);
	ksft_set_plan(6);
	vbhp_dbg_read(&d);
	f = device_features();
	hp = vbhp_dbg(&d, "hp_order");
	doom = vbhp_dbg(&d, "deflate_on_oom");
	ksft_print_msg("%s: must_tell_host=%d stats_vq=%d deflate_on_oom=%d hp_blocks=%d/%ld\n",
		       vbhp_device_dir(), has(f, F_MUST_TELL_HOST), has(f, F_STATS_VQ),
		       has(f, F_DEFLATE_ON_OOM), has(f, F_HP_BLOCKS), hp);

	order = vbhp_param("page_order");
	max = vbhp_dbg(&d, "page_order");
	ksft_test_result(order >= 0 && order <= MAX_ORDER_X86 &&
			 max == vbhp_expected_order(&d) && (!hp || hp <= order),
			 "page_order=%ld (0..%d), blocks of order %ld in use\n",
			 order, MAX_ORDER_X86, max);

	inflight = vbhp_param("max_inflight");
	lo = vbhp_dbg(&d, "inflate_max_inflight");
	hi = vbhp_dbg(&d, "deflate_max_inflight");
	ksft_test_result(inflight >= 1 && inflight <= 64 && lo >= 1 && lo <= inflight &&
			 hi >= 1 && hi <= inflight,
			 "max_inflight=%ld (1..64): inflate queue %ld, deflate queue %ld buffers\n",
			 inflight, lo, hi);

	reserve_mb = vbhp_param("reserve_mb");
	r = vbhp_dbg(&d, "reserve_pages");
	if (reserve_mb)
		ksft_test_result(r == reserve_mb * MiB_PAGES, "reserve_mb=%ld: reserve %ld pages\n",
				 reserve_mb, r);
	else
		ksft_test_result(r >= 32 * MiB_PAGES && r <= 1024 * MiB_PAGES,
				 "reserve_mb=0 (auto): reserve %ld MiB, within 32..1024\n",
				 r / MiB_PAGES);

	ksft_test_result(!(f & ~DRIVER_BITS),
			 "device features negotiated: 0x%lx, all within the driver's 0x%lx\n",
			 f, DRIVER_BITS);
	ksft_test_result(doom == has(f, F_DEFLATE_ON_OOM),
			 "deflate_on_oom in use %ld, negotiated %d\n",
			 doom, has(f, F_DEFLATE_ON_OOM));
	ksft_test_result(!!hp == has(f, F_HP_BLOCKS) &&
			 !!vbhp_dbg(&d, "hp_inflate_max_inflight") == has(f, F_HP_BLOCKS),
			 "hp blocks in use (order %ld) %s negotiated\n",
			 hp, has(f, F_HP_BLOCKS) ? "and" : "and not");
	ksft_finished();
}
