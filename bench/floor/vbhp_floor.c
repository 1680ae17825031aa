// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_floor - the physical floor of an inflate: allocate @mib MiB in
 * blocks of @order with the flags virtio_balloon_hp uses (zeroed when the
 * guest runs with init_on_alloc=1), then free it all, with no host traffic
 * and no accounting.  Timings go to the kernel log:
 *   vbhp_floor: order 9: 3072 MiB allocated in 812345 us, freed in 1234 us
 * The load then fails with -EAGAIN on purpose, so nothing stays loaded.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>

static unsigned int mib = 1024;
module_param(mib, uint, 0444);
MODULE_PARM_DESC(mib, "MiB to allocate (default 1024)");

static unsigned int order = 9;
module_param(order, uint, 0444);
MODULE_PARM_DESC(order, "Block order (default 9; valid 0-10)");

static int __init vbhp_floor_init(void)
{
	unsigned long want = (unsigned long)mib << (20 - PAGE_SHIFT) >> order;
	unsigned long got = 0;
	struct page *page, *next;
	ktime_t t0, t1, t2;
	LIST_HEAD(blocks);

	if (order > 10 || !mib) {
		pr_err("order=%u mib=%u invalid: order 0-10, mib > 0\n", order, mib);
		return -EINVAL;
	}
	t0 = ktime_get();
	for (; got < want; got++) {
		page = alloc_pages(GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOWARN |
				   __GFP_NOMEMALLOC, order);
		if (!page)
			break;
		list_add(&page->lru, &blocks);
	}
	t1 = ktime_get();
	list_for_each_entry_safe(page, next, &blocks, lru) {
		list_del(&page->lru);
		__free_pages(page, order);
	}
	t2 = ktime_get();
	pr_info("order %u: %lu MiB allocated in %lld us, freed in %lld us\n",
		order, (got << order) >> (20 - PAGE_SHIFT),
		ktime_us_delta(t1, t0), ktime_us_delta(t2, t1));
	return -EAGAIN;
}
module_init(vbhp_floor_init);

MODULE_DESCRIPTION("virtio_balloon_hp benchmark: allocation floor");
MODULE_LICENSE("GPL");
