// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_balloon_hp: a virtio-balloon driver that moves memory in blocks of
 * 2^page_order pages (2 MiB on x86 by default) instead of single pages.
 *
 * Design
 * ------
 * One worker (vbhp_work_fn) moves the balloon toward the host's target in
 * rounds of bounded size, under vbhp->lock.  Inflating allocates naturally
 * aligned blocks without __GFP_COMP and without retrying, reclaiming hard or
 * invoking the OOM killer; when a block of the current order cannot be had
 * the round drops to a lower order: the next one whose blocks are kept
 * whole, else straight to order 0, which leaves the guest's free blocks of
 * the orders between to the guest (vbhp_inflate_fallback_order()); every
 * new round starts again at page_order.  Inflation also stops while less than
 * reserve_mb of memory would stay available in the zones the balloon
 * allocates from, so a host asking for more than the guest can give gets
 * what can be given and the guest keeps running.
 *
 * Blocks are kept whole (not compound, not split) on one list per order:
 * one list entry and one __free_pages() per block, and a block goes back to
 * the buddy allocator in one piece.  Every 4 KiB frame of a held block is
 * marked PageOffline so dump tools and /proc/kcore readers skip it.  Only a
 * deflate that must end on a frame count smaller than the smallest held
 * block splits one block into order-0 pages (split_page()).  Blocks
 * smaller than a pageblock and not of the host's block order (a round's
 * last blocks, sized to what the target still wants, and every block with
 * page_order below pageblock order on a host of 4 KiB frames) are split as
 * they join the balloon: see "Migration".
 *
 * Allocating is most of an inflate's cost when the kernel zeroes what it
 * allocates (init_on_alloc=1), so with inflate_workers > 1 a round's blocks
 * are allocated by that many workers at once, on CPUs spread over the NUMA
 * nodes, each from its own node (vbhp_fill_*).  They hand blocks over in
 * batches; the balloon worker alone queues them on the one transfer
 * pipeline below, in the order they arrive, so every rule of that pipeline
 * holds as with one allocating task.  A block is allocated by one worker
 * and handed over once; a round that stops early (memory short, the device
 * broke, on-demand deflate) frees what was handed over and not sent.
 *
 * Deflating takes the smallest blocks first: they are the fallback blocks
 * taken from fragmented memory, giving them back lets the guest's buddy
 * allocator merge them again, and the big blocks -- the ones a host backs
 * or maps in one piece -- stay in the balloon the longest.
 *
 * Frame numbers travel on the inflate and deflate queues in buffers of at
 * most 256 4 KiB PFNs (or of whole blocks, see Host huge pages).  Several
 * buffers may be in flight per queue (max_inflight), so the guest fills the
 * next buffer while the host works on the previous ones; buffers retire in
 * the order they were sent, and a block changes hands only when the buffer
 * holding its last frame retires.
 * Deflated blocks are given back to the page allocator in exactly one place,
 * vbhp_blk_release_list(), which only ever runs on retired buffers: that is
 * how VIRTIO_BALLOON_F_MUST_TELL_HOST is honoured.
 *
 * Host huge pages.  A stock QEMU host (4.1 and later, so Debian 12's 7.2)
 * whose guest memory is backed by pages larger than 4 KiB (hugetlbfs)
 * frees such a page only when one buffer names every 4 KiB frame of it:
 * it tracks a partly ballooned host page per buffer and forgets it when it
 * returns the buffer, or as soon as a frame of another host page comes.
 * With 256 frames a buffer a 2 MiB host page never comes back.  So (with
 * whole_blocks=1, the default) a buffer on the 4 KiB queues holds whole
 * blocks: it grows to 2^page_order frames when that is more than 256, a
 * block that does not fit in what is left of it goes into the next one,
 * and it travels as one chain of descriptors of at most 256 frames each
 * (the most a descriptor may carry, see uapi/linux/virtio_balloon_hp.h).
 * The spec forbids a device to assume any arrangement of a buffer's
 * descriptors; a host that reads only the first one anyway
 * (cloud-hypervisor's balloon, as read) would miss the rest and wants
 * whole_blocks=0.  Frames keep their order and blocks still change hands
 * only when their buffer is acknowledged.
 *
 * Deflate on demand (VIRTIO_BALLOON_F_DEFLATE_ON_OOM only: without it the
 * balloon never goes below the host's target).  Three triggers give whole
 * blocks back through the host, below the target: a shrinker run by direct
 * reclaim, the OOM notifier (64 MiB per call) and an ioctl on
 * /dev/virtio_balloon_hp for programs about to pin memory for DMA.  The
 * shrinker reads the zone the allocation may use from its gfp mask and
 * only gives back blocks in that zone or below (a GFP_DMA32 allocation
 * gets blocks below 4 GiB); otherwise it takes the smallest blocks first,
 * as a deflate round does.  Only direct reclaim deflates, one request's
 * worth per reclaim pass; not kswapd, which runs whenever free memory
 * dips (also while the balloon inflates), nor drop_caches.  Reclaim for
 * an opportunistic allocation (a transparent huge page, __GFP_NORETRY)
 * gets nothing unless every zone it may use is below its low watermark:
 * on a fragmented guest each of its passes would take a 2 MiB block and
 * the balloon would become a huge-page pool.  Reclaim and
 * the OOM notifier never block on vbhp->lock (the worker allocates with it
 * held): they trylock and, if an inflate round holds the lock, ask that
 * round to stop; it retries a second later.  After an on-demand deflate
 * the balloon does not inflate again until the host writes a target: the
 * host sees "actual" drop and decides.  Hibernation's shrink_all_memory()
 * and writes to the root cgroup's memory.reclaim count as direct reclaim
 * too: they may deflate (a reset follows hibernation anyway).
 * No timer re-inflates it, because re-inflating into the pressure that
 * just deflated it is the reclaim/inflate loop that made upstream revert
 * its shrinker.
 *
 * Migration.  Order-0 blocks (page_order=0, the pieces of a split block,
 * and blocks below a pageblock, which join the balloon as their pieces)
 * are held on the kernel's balloon list (vb->bdev) instead of our own,
 * so that compaction, CMA, memory offlining
 * and runtime huge page allocation can move them, as the in-tree driver's
 * pages move: vbhp_migratepage() tells the host about the new page, then
 * about the old one, through the same queues and under the same lock as
 * any inflate and deflate.  Blocks of a pageblock or more (and hp blocks)
 * cannot move: the kernel's
 * balloon API migrates single pages only, and a whole block would need a
 * free block of its order to move into, which is what compaction is
 * trying to make.  A balloon of 2 MiB blocks instead never fragments
 * memory below 2 MiB in the first place.  compat.h maps the API of
 * kernels before 7.0 (balloon_compaction.h) onto 7.0's (balloon.h).
 *
 * Page zeroing.  A guest kernel running with init_on_alloc=1 (Debian's
 * default) zeroes every block the balloon allocates; with init_on_free=1
 * it zeroed them when they were last freed, and zeroes every block a
 * deflate gives back.  Either way the guest writes each page it balloons,
 * memory the host is about to discard, and with init_on_alloc that is
 * nearly all of an inflate's time.  No
 * allocation flag lets a module skip it, so the driver reads both
 * settings at probe, reports them (debugfs, STATS) and says once per
 * device, when a target asks for more than a quarter of RAM, what that
 * costs and that init_on_alloc=0 avoids it.
 *
 * Free page reporting (VIRTIO_BALLOON_F_REPORTING) is independent of the
 * balloon: the kernel's page reporting core hands us free blocks of
 * pageblock order and up, we pass them to the host on the reporting queue
 * and it may drop their backing.  Page poisoning (PAGE_POISON) tells the
 * host what freed pages hold, with the in-tree driver's rules.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/lockdep.h>
#include <linux/log2.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/oom.h>
#include <linux/page_reporting.h>
#include <linux/poison.h>
#include <linux/scatterlist.h>
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/swap.h>
#include <linux/uaccess.h>
#include <linux/vmstat.h>
#include <linux/virtio_config.h>

#include "balloon_hp.h"

static unsigned int page_order = 9;
module_param(page_order, uint, 0444);
MODULE_PARM_DESC(page_order,
		 "Order of balloon blocks in pages (default 9 = 2 MiB with 4 KiB pages; valid 0 to the kernel's largest buddy order)");

static unsigned int max_inflight = 8;
module_param(max_inflight, uint, 0444);
MODULE_PARM_DESC(max_inflight,
		 "Buffers of PFNs in flight per queue (default 8, valid 1-64)");

static bool whole_blocks = true;
module_param(whole_blocks, bool, 0444);
MODULE_PARM_DESC(whole_blocks,
		 "Send every block's 4 KiB frames in one buffer (a chain of 1 KiB descriptors), so that a QEMU host backed by huge pages can free them (default 1; 0 = at most 256 frames a buffer, for hosts that read only a buffer's first descriptor)");

static unsigned int reserve_mb;
module_param(reserve_mb, uint, 0444);
MODULE_PARM_DESC(reserve_mb,
		 "Memory in MiB that inflation always leaves available to the guest (default 0 = automatic: 1/32 of RAM, 32 to 1024 MiB)");

static unsigned int inflate_workers;
module_param(inflate_workers, uint, 0444);
MODULE_PARM_DESC(inflate_workers,
		 "Inflate workers allocating (and zeroing) blocks on as many CPUs at once (default 0 = one per online CPU, at most 16; 1 = the balloon worker allocates alone; valid 0-64)");

/* Balloon allocations fail fast and quietly instead of pressing the guest. */
#define VBHP_GFP_QUIET	(__GFP_NORETRY | __GFP_NOWARN | __GFP_NOMEMALLOC)

/* The least one worker round moves: 256 MiB (more with hp blocks). */
#define VBHP_ROUND_FRAMES	(256UL << (20 - VIRTIO_BALLOON_HP_PFN_SHIFT))

/* Within a round, "actual" is updated every 64 MiB moved. */
#define VBHP_ACTUAL_STEP	(64UL << (20 - VIRTIO_BALLOON_HP_PFN_SHIFT))

/* What the OOM notifier gives back per call. */
#define VBHP_OOM_FRAMES		(64UL << (20 - VIRTIO_BALLOON_HP_PFN_SHIFT))

/* How long (at most) the OOM notifier tries for the balloon's lock. */
#define VBHP_OOM_LOCK_TRIES	100
#define VBHP_OOM_LOCK_WAIT_MS	10

/* The first frame above 4 GiB (32-bit DMA). */
#define VBHP_4G_PFN		(1UL << (32 - PAGE_SHIFT))

/* Inflate workers hand blocks over at least every 2 MiB they allocate. */
#define VBHP_FILL_BATCH		(2UL << (20 - VIRTIO_BALLOON_HP_PFN_SHIFT))

/* How long an inflate that found no memory waits before trying again. */
#define VBHP_RETRY_DELAY	HZ

/* Waiting for order-0 blocks isolated for migration: 10 s in steps. */
#define VBHP_ISOLATED_WAIT	(HZ / 20)
#define VBHP_ISOLATED_TRIES	200

static const char * const vbhp_xfer_names[VBHP_XFER_NUM] = {
	[VBHP_XFER_INFLATE] = "inflate",
	[VBHP_XFER_DEFLATE] = "deflate",
	[VBHP_XFER_HP_INFLATE] = "hp_inflate",
	[VBHP_XFER_HP_DEFLATE] = "hp_deflate",
};

static const char * const vbhp_xfer_stat_names[VBHP_XSTAT_NUM] = {
	[VBHP_XSTAT_BUFS] = "buffers",
	[VBHP_XSTAT_PFNS] = "pfns",
};

static const char * const vbhp_order_stat_names[VBHP_OSTAT_NUM] = {
	[VBHP_OSTAT_ALLOC] = "alloc",
	[VBHP_OSTAT_ALLOC_FAIL] = "alloc_fail",
	[VBHP_OSTAT_FREE] = "free",
};

static const char * const vbhp_stat_names[VBHP_STAT_NUM] = {
	[VBHP_STAT_FALLBACK] = "fallbacks",
	[VBHP_STAT_SPLIT] = "splits",
	[VBHP_STAT_STALL] = "inflate_stalls",
	[VBHP_STAT_OD_BELOW_4G] = "od_below_4g_pages",
	[VBHP_STAT_OD_ABORT] = "od_inflate_aborts",
	[VBHP_STAT_XFER_ERR] = "xfer_errors",
	[VBHP_STAT_FILL_UNUSED] = "fill_unused",
	[VBHP_STAT_MIGRATE] = "migrations",
	[VBHP_STAT_MIGRATE_BUSY] = "migrate_busy",
};

static const char * const vbhp_report_stat_names[VBHP_RSTAT_NUM] = {
	[VBHP_RSTAT_BUFS] = "buffers",
	[VBHP_RSTAT_PAGES] = "pages",
	[VBHP_RSTAT_ERR] = "errors",
};

static const char * const vbhp_od_names[VBHP_OD_NUM] = {
	[VBHP_OD_SHRINKER] = "shrinker",
	[VBHP_OD_OOM] = "oom",
	[VBHP_OD_IOCTL] = "ioctl",
};

static const char * const vbhp_od_stat_names[VBHP_ODSTAT_NUM] = {
	[VBHP_ODSTAT_EVENTS] = "events",
	[VBHP_ODSTAT_PAGES] = "pages",
};

static inline unsigned long vbhp_order_frames(unsigned int order)
{
	return 1UL << order;
}

static inline void vbhp_count(atomic64_t *counter, long n)
{
	atomic64_add(n, counter);
}

/* ---- blocks: allocation, marking, the per-order lists ---- */

static void vbhp_blk_set_offline(struct page *page, unsigned int order,
				 bool offline)
{
	unsigned long i;

	for (i = 0; i < (1UL << order); i++) {
		if (offline)
			__SetPageOffline(page + i);
		else
			__ClearPageOffline(page + i);
	}
}

/*
 * Blocks of a pageblock or more are unmovable allocations: they take whole
 * pageblocks and mix with nothing.  Smaller blocks use the
 * movable migratetype, without __GFP_HIGHMEM so never from ZONE_MOVABLE:
 * as unmovable allocations they would steal and convert the movable
 * pageblocks of a fragmented guest, which compaction then no longer uses,
 * and the guest's own small allocations would start failing with memory
 * free.  They are held as order-0 pieces, which migrate (see "Migration"
 * in the design comment), so they pin no pageblock.
 *
 * No block comes from ZONE_MOVABLE (that takes __GFP_HIGHMEM and
 * __GFP_MOVABLE together), unlike the in-tree driver's pages: everything
 * in that zone must be migratable so that memory offlining and
 * alloc_contig_range() can empty it, and most of our blocks cannot
 * migrate.  The reserve therefore counts only the
 * zones these masks reach (vbhp_inflate_avail()).
 */
static gfp_t vbhp_blk_gfp(unsigned int order)
{
	if (order >= pageblock_order)
		return GFP_HIGHUSER | VBHP_GFP_QUIET;
	return GFP_USER | __GFP_MOVABLE | VBHP_GFP_QUIET;
}

/* Allocate one block for the balloon; NULL when none of @order is free. */
static struct page *vbhp_blk_alloc(struct vbhp *vb, unsigned int order)
{
	struct page *page = alloc_pages(vbhp_blk_gfp(order), order);

	if (page && page_to_pfn(page) + (1UL << order) > (u64)U32_MAX + 1) {
		/* The wire carries 32-bit frame numbers: unusable here. */
		__free_pages(page, order);
		page = NULL;
	}
	if (!page) {
		vbhp_count(&vb->ostats[order][VBHP_OSTAT_ALLOC_FAIL], 1);
		return NULL;
	}
	vbhp_count(&vb->ostats[order][VBHP_OSTAT_ALLOC], 1);
	set_page_private(page, order);
	vbhp_blk_set_offline(page, order, true);
	if (vb->adjust_managed)
		adjust_managed_page_count(page, -(1L << order));
	return page;
}

/* Give one block back to the page allocator. */
static void vbhp_blk_free(struct vbhp *vb, struct page *page)
{
	unsigned int order = page_private(page);

	if (vb->adjust_managed)
		adjust_managed_page_count(page, 1L << order);
	vbhp_blk_set_offline(page, order, false);
	set_page_private(page, 0);
	__free_pages(page, order);
	vbhp_count(&vb->ostats[order][VBHP_OSTAT_FREE], 1);
}

/*
 * Whether a block of @order is held as order-0 pieces.  Blocks below a
 * pageblock are movable allocations (vbhp_blk_gfp()): held whole they
 * could not migrate, and each would pin a movable pageblock against
 * compaction, CMA, memory offlining and runtime huge pages.  As pieces on
 * the balloon list they migrate.  Blocks of the host's block order stay
 * whole: the hp queues name them by one frame number each.
 */
static bool vbhp_blk_in_pieces(struct vbhp *vb, unsigned int order)
{
	return order && order < pageblock_order && order != vb->hp_order;
}

/*
 * Break a block (held or not) into order-0 blocks on the tail of @list.
 * Counted as a free at its order and allocations at order 0, so that per
 * order alloc - free == held stays true.
 */
static void vbhp_blk_to_pieces(struct vbhp *vb, struct page *page,
			       struct list_head *list)
{
	unsigned int order = page_private(page);
	unsigned long i;

	split_page(page, order);
	for (i = 0; i < (1UL << order); i++) {
		/* Only the head's private was ours: the others may be stale. */
		set_page_private(page + i, 0);
		list_add_tail(&page[i].lru, list);
	}
	vbhp_count(&vb->ostats[order][VBHP_OSTAT_FREE], 1);
	vbhp_count(&vb->ostats[0][VBHP_OSTAT_ALLOC], 1L << order);
}

/*
 * Hold order-0 blocks on the balloon list: pieces of a block, or blocks
 * taken by vbhp_blk0_unhold() and not used.
 */
static void vbhp_blk0_hold_list(struct vbhp *vb, struct list_head *list)
{
	unsigned long n;

	lockdep_assert_held(&vb->lock);
	n = balloon_page_list_enqueue(&vb->bdev, list);
	WRITE_ONCE(vb->nr_blocks[0], vb->nr_blocks[0] + n);
}

/*
 * Hold a block in the balloon: an order-0 block on the kernel's balloon
 * list, where it can migrate (its page->private then points at vb->bdev
 * instead of holding the order: read the order first), a block that
 * vbhp_blk_in_pieces() names as its pieces there, a larger one on our own
 * list.
 */
static void vbhp_blk_hold(struct vbhp *vb, struct page *page)
{
	unsigned int order = page_private(page);
	LIST_HEAD(pieces);

	lockdep_assert_held(&vb->lock);
	if (vbhp_blk_in_pieces(vb, order)) {
		vbhp_blk_to_pieces(vb, page, &pieces);
		vbhp_blk0_hold_list(vb, &pieces);
		return;
	}
	if (order)
		list_add(&page->lru, &vb->blocks[order]);
	else
		balloon_page_enqueue(&vb->bdev, page);
	WRITE_ONCE(vb->nr_blocks[order], vb->nr_blocks[order] + 1);
}

/* Take a held block of order 1 or more off its list. */
static void vbhp_blk_unhold(struct vbhp *vb, struct page *page)
{
	unsigned int order = page_private(page);

	lockdep_assert_held(&vb->lock);
	list_del(&page->lru);
	WRITE_ONCE(vb->nr_blocks[order], vb->nr_blocks[order] - 1);
}

/*
 * Take up to @n order-0 blocks off the balloon list onto the tail of @list;
 * returns how many.  Blocks isolated for migration are not on the list:
 * fewer than held may come back.  The balloon core cleared page->private
 * (order 0 again) and, before 7.0, PageOffline, which is set again.
 */
static unsigned long vbhp_blk0_unhold(struct vbhp *vb, struct list_head *list,
				      unsigned long n)
{
	struct page *page;
	LIST_HEAD(got);

	lockdep_assert_held(&vb->lock);
	n = balloon_page_list_dequeue(&vb->bdev, &got, n);
	list_for_each_entry(page, &got, lru)
		vbhp_blk_set_offline(page, 0, true);
	list_splice_tail(&got, list);
	WRITE_ONCE(vb->nr_blocks[0], vb->nr_blocks[0] - n);
	return n;
}

/* The host acknowledged these inflated blocks: they join the balloon. */
static void vbhp_blk_hold_list(struct vbhp *vb, struct list_head *list)
{
	struct page *page, *next;

	lockdep_assert_held(&vb->lock);
	list_for_each_entry_safe(page, next, list, lru) {
		list_del(&page->lru);
		vb->num_pages += vbhp_order_frames(page_private(page));
		vbhp_blk_hold(vb, page);
	}
}

/*
 * The host acknowledged the buffers naming these deflated blocks.  This is
 * the only place ballooned memory returns to the guest, and it is only
 * reached from vbhp_xfer_retire(): VIRTIO_BALLOON_F_MUST_TELL_HOST holds by
 * construction (and is kept without the feature too, at no cost).
 */
static void vbhp_blk_release_list(struct vbhp *vb, struct list_head *list)
{
	struct page *page, *next;

	lockdep_assert_held(&vb->lock);
	list_for_each_entry_safe(page, next, list, lru) {
		list_del(&page->lru);
		vb->num_pages -= vbhp_order_frames(page_private(page));
		vbhp_blk_free(vb, page);
	}
}

/* Split one held block into order-0 blocks, all still held. */
static void vbhp_blk_split(struct vbhp *vb, struct page *page)
{
	LIST_HEAD(pieces);

	vbhp_blk_unhold(vb, page);
	vbhp_blk_to_pieces(vb, page, &pieces);
	vbhp_blk0_hold_list(vb, &pieces);
	vbhp_count(&vb->stats[VBHP_STAT_SPLIT], 1);
}

/*
 * Pick the next block to deflate, smallest order first, no larger than
 * @frames (splitting one if needed); NULL once the balloon is empty, or
 * holds only order-0 blocks isolated for migration.
 */
static struct page *vbhp_blk_pick(struct vbhp *vb, unsigned long frames)
{
	struct page *page;
	unsigned int order;
	LIST_HEAD(one);

	if (!frames)
		return NULL;
	if (vbhp_blk0_unhold(vb, &one, 1))
		return list_first_entry(&one, struct page, lru);
	for (order = 1; order < VBHP_NR_ORDERS; order++) {
		page = list_first_entry_or_null(&vb->blocks[order],
						struct page, lru);
		if (!page)
			continue;
		if (vbhp_order_frames(order) <= frames) {
			vbhp_blk_unhold(vb, page);
			return page;
		}
		vbhp_blk_split(vb, page);
		if (vbhp_blk0_unhold(vb, &one, 1))
			return list_first_entry(&one, struct page, lru);
		return NULL;
	}
	return NULL;
}

/* ---- the host's config: target and actual ---- */

static unsigned long vbhp_cfg_target(struct vbhp *vb)
{
	u32 num_pages;

	virtio_cread_le(vb->vdev, struct virtio_balloon_config, num_pages,
			&num_pages);
	return num_pages;
}

static void vbhp_cfg_update_actual(struct vbhp *vb)
{
	u32 actual = vb->num_pages;

	lockdep_assert_held(&vb->lock);
	virtio_cwrite_le(vb->vdev, struct virtio_balloon_config, actual,
			 &actual);
	WRITE_ONCE(vb->reported, vb->num_pages);
}

/* RAM the guest has, ballooned or not, in pages. */
static unsigned long vbhp_ram_pages(struct vbhp *vb)
{
	unsigned long pages = totalram_pages();

	if (vb->adjust_managed)
		pages += READ_ONCE(vb->num_pages);
	return pages;
}

/* ---- transfers: buffers of frame numbers in flight to the host ---- */

static struct vbhp_buf *vbhp_xfer_cur(struct vbhp_xfer *x)
{
	return &x->ring[(x->head + x->inflight) % x->nr_slots];
}

/* Mark the buffers the host returned; true if there was at least one. */
static bool vbhp_xfer_collect(struct vbhp_xfer *x)
{
	struct vbhp_buf *buf;
	unsigned int len;
	bool any = false;

	while ((buf = virtqueue_get_buf(x->vq, &len))) {
		buf->acked = true;
		any = true;
	}
	return any;
}

/*
 * Put back a block the host was not told about in full.  A deflated block
 * stays in the balloon: only an acknowledged deflate may hand it to the
 * guest.  An inflated block goes back to the guest, unless part of it went
 * out in an earlier buffer that the host may act on: then it joins the
 * balloon as if acknowledged, and a later deflate tells the host about it.
 */
static void vbhp_xfer_put_back(struct vbhp *vb, struct vbhp_xfer *x,
			       struct page *page, bool partly_sent)
{
	if (x->inflate && !partly_sent) {
		vbhp_blk_free(vb, page);
		return;
	}
	if (x->inflate)
		vb->num_pages += vbhp_order_frames(page_private(page));
	vbhp_blk_hold(vb, page);
}

/*
 * @buf could not be sent: put its blocks back.  Only the first block on its
 * list can have begun in an earlier buffer; on an hp queue none can.
 */
static void vbhp_xfer_unwind(struct vbhp *vb, struct vbhp_xfer *x,
			     struct vbhp_buf *buf)
{
	unsigned long first = virtio32_to_cpu(vb->vdev, buf->pfns[0]);
	bool head = true;
	struct page *page, *next;

	list_for_each_entry_safe(page, next, &buf->blocks, lru) {
		list_del(&page->lru);
		vbhp_xfer_put_back(vb, x, page,
				   head && page_to_pfn(page) != first);
		head = false;
	}
	buf->nr_pfns = 0;
}

/*
 * The device broke: nothing in flight will come back.  The host may have
 * acted on any of it, so every block in flight stays in the balloon.
 */
static void vbhp_xfer_abandon(struct vbhp *vb, struct vbhp_xfer *x)
{
	struct page *page, *next;
	struct vbhp_buf *buf;

	while (x->inflight) {
		buf = &x->ring[x->head];
		list_for_each_entry_safe(page, next, &buf->blocks, lru) {
			list_del(&page->lru);
			vbhp_xfer_put_back(vb, x, page, true);
		}
		buf->acked = false;
		buf->nr_pfns = 0;
		x->head = (x->head + 1) % x->nr_slots;
		WRITE_ONCE(x->inflight, x->inflight - 1);
	}
}

/* Retire acknowledged buffers in the order they were sent. */
static void vbhp_xfer_retire(struct vbhp *vb, struct vbhp_xfer *x)
{
	struct vbhp_buf *buf;

	lockdep_assert_held(&vb->lock);
	while (x->inflight && x->ring[x->head].acked) {
		buf = &x->ring[x->head];
		if (x->inflate)
			vbhp_blk_hold_list(vb, &buf->blocks);
		else
			vbhp_blk_release_list(vb, &buf->blocks);
		buf->acked = false;
		buf->nr_pfns = 0;
		x->head = (x->head + 1) % x->nr_slots;
		WRITE_ONCE(x->inflight, x->inflight - 1);
	}
	/* Let the host watch long rounds progress. */
	if (max(vb->num_pages, vb->reported) - min(vb->num_pages, vb->reported) >=
	    VBHP_ACTUAL_STEP)
		vbhp_cfg_update_actual(vb);
}

/*
 * Wait until at least one more buffer in flight has been retired; false if
 * the device broke instead (what was in flight is then abandoned).  The
 * wait looks at the device once a second too: a transport that breaks it
 * (surprise removal) does not always call the queue's callback.
 */
static bool vbhp_xfer_wait(struct vbhp *vb, struct vbhp_xfer *x)
{
	unsigned int before = x->inflight;

	while (x->inflight == before) {
		wait_event_timeout(vb->acked, vbhp_xfer_collect(x) ||
				   virtqueue_is_broken(x->vq), HZ);
		vbhp_xfer_retire(vb, x);
		if (x->inflight == before && virtqueue_is_broken(x->vq)) {
			vbhp_xfer_abandon(vb, x);
			return false;
		}
	}
	return true;
}

#ifdef VBHP_TEST_HOOKS
/* Test builds: refuse the next test_fail_sends buffers, as a broken queue. */
static int vbhp_xfer_test_fail(struct vbhp *vb)
{
	if (!vb->test_fail_sends)
		return 0;
	vb->test_fail_sends--;
	return -EIO;
}
#else
static inline int vbhp_xfer_test_fail(struct vbhp *vb)
{
	return 0;
}
#endif

/*
 * Send the buffer being filled, if it holds anything.  A buffer the queue
 * refuses (a broken device, or no room to map it for DMA) is not counted
 * as in flight and its blocks are put back; returns false then.
 */
static bool vbhp_xfer_send(struct vbhp *vb, struct vbhp_xfer *x)
{
	struct vbhp_buf *buf = vbhp_xfer_cur(x);
	struct scatterlist sg[VBHP_BUF_DESCS];
	unsigned int i, n, nr_sg;
	int err;

	lockdep_assert_held(&vb->lock);
	if (!buf->nr_pfns)
		return true;
	/* one descriptor per VIRTIO_BALLOON_HP_PFNS_PER_BUF frames */
	nr_sg = DIV_ROUND_UP(buf->nr_pfns, VIRTIO_BALLOON_HP_PFNS_PER_BUF);
	sg_init_table(sg, nr_sg);
	for (i = 0; i < nr_sg; i++) {
		n = min_t(unsigned int, VIRTIO_BALLOON_HP_PFNS_PER_BUF,
			  buf->nr_pfns - i * VIRTIO_BALLOON_HP_PFNS_PER_BUF);
		sg_set_buf(&sg[i], buf->pfns + i * VIRTIO_BALLOON_HP_PFNS_PER_BUF,
			   n * sizeof(buf->pfns[0]));
	}
	err = vbhp_xfer_test_fail(vb) ?:
	      virtqueue_add_outbuf(x->vq, sg, nr_sg, buf, GFP_KERNEL);
	if (err) {
		dev_warn_ratelimited(&vb->vdev->dev, "%s buffer not sent: %d\n",
				     vbhp_xfer_names[x->id], err);
		vbhp_count(&vb->stats[VBHP_STAT_XFER_ERR], 1);
		vbhp_xfer_unwind(vb, x, buf);
		return false;
	}
	virtqueue_kick(x->vq);
	WRITE_ONCE(x->inflight, x->inflight + 1);
	vbhp_count(&x->stats[VBHP_XSTAT_BUFS], 1);
	vbhp_count(&x->stats[VBHP_XSTAT_PFNS], buf->nr_pfns);
	return true;
}

/* The queue a block of @order travels on, inflating or deflating. */
static struct vbhp_xfer *vbhp_xfer_for(struct vbhp *vb, unsigned int order,
				       bool inflate)
{
	if (vb->hp_order && order == vb->hp_order)
		return &vb->xfer[inflate ? VBHP_XFER_HP_INFLATE :
					   VBHP_XFER_HP_DEFLATE];
	return &vb->xfer[inflate ? VBHP_XFER_INFLATE : VBHP_XFER_DEFLATE];
}

/*
 * Queue one block on its queue: one frame number per 2^pfn_order frames
 * (every 4 KiB frame, or just the first on an hp queue), sending buffers
 * as they fill up.  A queue of whole-block buffers starts a new buffer
 * for a block that does not fit in what is left of the current one, so
 * the loop below never sends there.  False if a buffer could not be sent
 * or the device broke: the block and those queued with it were put back.
 */
static bool vbhp_xfer_add(struct vbhp *vb, struct page *page, bool inflate)
{
	unsigned int order = page_private(page);
	struct vbhp_xfer *x = vbhp_xfer_for(vb, order, inflate);
	unsigned long frames = vbhp_order_frames(order);
	unsigned long pfn = page_to_pfn(page);
	struct vbhp_buf *buf = vbhp_xfer_cur(x);
	bool sent_part = false;
	unsigned long i;

	lockdep_assert_held(&vb->lock);
	if (x->whole_blocks &&
	    buf->nr_pfns + (frames >> x->pfn_order) > x->buf_pfns) {
		if (!vbhp_xfer_send(vb, x) ||
		    (x->inflight == x->nr_slots && !vbhp_xfer_wait(vb, x)))
			goto put_back;
		buf = vbhp_xfer_cur(x);
	}
	for (i = 0; i < frames; i += 1UL << x->pfn_order) {
		if (buf->nr_pfns == x->buf_pfns) {
			if (!vbhp_xfer_send(vb, x))
				goto put_back;
			/* the buffer just sent held frames of this block */
			sent_part = sent_part || i;
			if (x->inflight == x->nr_slots && !vbhp_xfer_wait(vb, x))
				goto put_back;
			buf = vbhp_xfer_cur(x);
		}
		buf->pfns[buf->nr_pfns++] = cpu_to_virtio32(vb->vdev, pfn + i);
	}
	list_add_tail(&page->lru, &buf->blocks);
	return true;

put_back:
	vbhp_xfer_put_back(vb, x, page, sent_part);
	return false;
}

/*
 * Send what is left on the queues of one direction and wait until the host
 * has acknowledged everything (or the device broke).
 */
static void vbhp_xfer_flush(struct vbhp *vb, bool inflate)
{
	struct vbhp_xfer *x;
	unsigned int i;

	lockdep_assert_held(&vb->lock);
	for (i = 0; i < VBHP_XFER_NUM; i++) {
		x = &vb->xfer[i];
		if (x->vq && x->inflate == inflate)
			vbhp_xfer_send(vb, x);
	}
	for (i = 0; i < VBHP_XFER_NUM; i++) {
		x = &vb->xfer[i];
		while (x->vq && x->inflate == inflate && x->inflight)
			vbhp_xfer_wait(vb, x);
	}
}

/* The device broke (surprise removal): no buffer will come back. */
static bool vbhp_xfer_broken(struct vbhp *vb)
{
	return virtqueue_is_broken(vb->xfer[VBHP_XFER_INFLATE].vq);
}

/* Set up the pipeline of one queue; no ring for a queue not negotiated. */
static int vbhp_xfer_setup(struct vbhp *vb, enum vbhp_xfer_id id)
{
	struct vbhp_xfer *x = &vb->xfer[id];
	unsigned int i;

	x->id = id;
	x->head = 0;
	x->inflight = 0;
	x->inflate = id == VBHP_XFER_INFLATE || id == VBHP_XFER_HP_INFLATE;
	x->pfn_order = id >= VBHP_XFER_HP_INFLATE ? vb->hp_order : 0;
	x->whole_blocks = whole_blocks && !x->pfn_order;
	x->buf_pfns = VIRTIO_BALLOON_HP_PFNS_PER_BUF;
	if (x->whole_blocks)
		x->buf_pfns = max_t(unsigned int, x->buf_pfns,
				    vbhp_order_frames(vb->max_order));
	if (!x->vq)
		return 0;
	x->nr_slots = min(max_inflight, virtqueue_get_vring_size(x->vq));
	x->ring = kcalloc(x->nr_slots, sizeof(*x->ring), GFP_KERNEL);
	if (!x->ring)
		return -ENOMEM;
	for (i = 0; i < x->nr_slots; i++) {
		INIT_LIST_HEAD(&x->ring[i].blocks);
		x->ring[i].pfns = kcalloc(x->buf_pfns, sizeof(*x->ring[i].pfns),
					  GFP_KERNEL);
		if (!x->ring[i].pfns)
			return -ENOMEM;
	}
	return 0;
}

/*
 * Virtqueue callback of the inflate, deflate and reporting queues: the host
 * returned a buffer.
 */
static void vbhp_xfer_done(struct virtqueue *vq)
{
	struct vbhp *vb = vq->vdev->priv;

	wake_up(&vb->acked);
}

/* ---- the balloon: inflate and deflate toward the host's target ---- */

/**
 * vbhp_inflate_zone_avail() - what one zone can give an allocation
 * @zone: the zone
 * @top: the highest zone the allocation may use (its lowmem reserve applies)
 *
 * As si_mem_available() counts for the whole system: free pages above the
 * high watermark and the lowmem reserve, plus the file LRU less the part
 * reclaim would not give back (half of it, at most the low watermark).
 *
 * Return: pages, negative when the zone is already below its watermark.
 */
static long vbhp_inflate_zone_avail(struct zone *zone, enum zone_type top)
{
	unsigned long file;

	if (!populated_zone(zone))
		return 0;
	file = zone_page_state(zone, NR_ZONE_ACTIVE_FILE) +
	       zone_page_state(zone, NR_ZONE_INACTIVE_FILE);
	return (long)zone_page_state(zone, NR_FREE_PAGES) -
	       (long)(high_wmark_pages(zone) + zone->lowmem_reserve[top]) +
	       (long)(file - min(file / 2, low_wmark_pages(zone)));
}

/**
 * vbhp_inflate_avail() - memory available to a block allocation
 * @gfp: the gfp mask the balloon allocates the block with
 *
 * Only the zones @gfp can allocate from count: vbhp_blk_gfp() never asks
 * for ZONE_MOVABLE, so a guest with most of its memory there (movablecore=,
 * memory onlined movable) must not count that memory, or the balloon
 * drains the zones it shares with the kernel's own allocations and keeps
 * them in reclaim while GiBs are free in ZONE_MOVABLE.
 *
 * Return: pages, at most si_mem_available().
 */
static long vbhp_inflate_avail(gfp_t gfp)
{
	enum zone_type top = gfp_zone(gfp), z;
	long avail = 0;
	int nid;

	for_each_online_node(nid)
		for (z = 0; z <= top; z++)
			avail += vbhp_inflate_zone_avail(&NODE_DATA(nid)->node_zones[z],
							 top);
	return min(avail, si_mem_available());
}

/* Whether taking @order more would eat into the guest's reserve. */
static bool vbhp_inflate_reserve_hit(struct vbhp *vb, unsigned int order)
{
	return vbhp_inflate_avail(vbhp_blk_gfp(order)) <
	       (long)(vb->reserve_pages + (1UL << order));
}

/*
 * vbhp_inflate_fallback_order() - the order to try after @order failed
 * @vb: the balloon
 * @order: the order no block was had at, above 0
 *
 * The next lower order whose blocks the balloon keeps whole (a pageblock or
 * more, or the host's block order), else 0.  A block it would hold as
 * order-0 pieces (vbhp_blk_in_pieces()) gives the host nothing that single
 * pages do not, yet it is a free block of the kind the guest's own
 * allocations above order 0 need: fork's task_struct and, without
 * VMAP_STACK, its stack; order-1 page tables; most slabs.  The kernel
 * reclaims, compacts and at last OOM-kills rather than fail those of up to
 * PAGE_ALLOC_COSTLY_ORDER.  In a fragmented guest a balloon working down
 * through the orders takes the last free block of each (the buddy
 * allocator hands out the smallest block that fits) and leaves only single
 * pages; order 0 takes the single pages first and leaves the blocks.  It
 * costs more allocations, nothing else.
 *
 * Return: the order to try next.
 */
static unsigned int vbhp_inflate_fallback_order(struct vbhp *vb,
						unsigned int order)
{
	while (--order && vbhp_blk_in_pieces(vb, order))
		;
	return order;
}

/*
 * Allocate a block of at most @frames 4 KiB frames, at the round's order or
 * the fallback orders below it; NULL when memory is short even at order 0.
 */
static struct page *vbhp_inflate_get_block(struct vbhp *vb,
					   unsigned long frames)
{
	unsigned int order;
	struct page *page;

	order = min_t(unsigned int, vb->alloc_order, ilog2(frames));
	for (;;) {
		if (vbhp_inflate_reserve_hit(vb, order))
			return NULL;
		page = vbhp_blk_alloc(vb, order);
		if (page || !order)
			return page;
		order = vbhp_inflate_fallback_order(vb, order);
		vb->alloc_order = order;
		vbhp_count(&vb->stats[VBHP_STAT_FALLBACK], 1);
	}
}

/* ---- inflate workers: allocating on several CPUs at once ---- */

/* Whether the current task is one of @vb's inflate workers. */
static bool vbhp_fill_is_worker(struct vbhp *vb)
{
	unsigned int i;

	for (i = 0; vb->fillers && i < vb->nr_fillers; i++)
		if (READ_ONCE(vb->fillers[i].task) == current)
			return true;
	return false;
}

/*
 * Claim the next block of the round for a worker: returns its order, or -1
 * when the round wants no more.  The order follows what is still wanted,
 * as vbhp_inflate_get_block() does, and the round's shared @alloc_order.
 */
static int vbhp_fill_claim(struct vbhp *vb)
{
	int order = -1;

	spin_lock(&vb->fill_lock);
	if (!vb->fill_stop && vb->fill_left && vb->fill_want &&
	    !READ_ONCE(vb->od_abort)) {
		order = min_t(unsigned int, vb->alloc_order,
			      ilog2(vb->fill_want));
		vb->fill_want -= vbhp_order_frames(order);
		vb->fill_left -= min(vb->fill_left, vbhp_order_frames(order));
	}
	spin_unlock(&vb->fill_lock);
	return order;
}

/*
 * A claimed block of @order was not had: give its frames back.  @short
 * (the reserve was hit) or a failure at order 0 ends the round; otherwise
 * the round, all of its workers, drops to the fallback order.
 */
static void vbhp_fill_unclaim(struct vbhp *vb, unsigned int order,
			      bool short_of_memory)
{
	spin_lock(&vb->fill_lock);
	vb->fill_want += vbhp_order_frames(order);
	vb->fill_left += vbhp_order_frames(order);
	if (short_of_memory || !order) {
		vb->fill_stop = true;
	} else if (vb->alloc_order >= order) {
		vb->alloc_order = vbhp_inflate_fallback_order(vb, order);
		vbhp_count(&vb->stats[VBHP_STAT_FALLBACK], 1);
	}
	spin_unlock(&vb->fill_lock);
}

/* Hand a worker's batch to the balloon worker; @last: the worker is done. */
static void vbhp_fill_hand_over(struct vbhp *vb, struct list_head *batch,
				bool last)
{
	spin_lock(&vb->fill_lock);
	list_splice_tail_init(batch, &vb->fill_list);
	if (last)
		vb->fill_running--;
	spin_unlock(&vb->fill_lock);
	wake_up(&vb->fill_wait);
}

/* One inflate worker: allocate claimed blocks until the round is done. */
static void vbhp_fill_fn(struct work_struct *work)
{
	struct vbhp_filler *f = container_of(work, struct vbhp_filler, work);
	struct vbhp *vb = f->vb;
	unsigned long batched = 0;
	unsigned int noio;
	struct page *page;
	LIST_HEAD(batch);
	int order;

	WRITE_ONCE(f->task, current);
	/* The balloon worker waits for us with vb->lock held: no I/O reclaim. */
	noio = memalloc_noio_save();
	while ((order = vbhp_fill_claim(vb)) >= 0) {
		if (vbhp_inflate_reserve_hit(vb, order)) {
			vbhp_fill_unclaim(vb, order, true);
			continue;
		}
		page = vbhp_blk_alloc(vb, order);
		if (!page) {
			vbhp_fill_unclaim(vb, order, false);
			continue;
		}
		list_add_tail(&page->lru, &batch);
		vbhp_count(&f->blocks, 1);
		batched += vbhp_order_frames(order);
		if (batched >= VBHP_FILL_BATCH) {
			vbhp_fill_hand_over(vb, &batch, false);
			batched = 0;
		}
	}
	memalloc_noio_restore(noio);
	WRITE_ONCE(f->task, NULL);
	vbhp_fill_hand_over(vb, &batch, true);
}

/*
 * The CPU for worker @i: the workers go round the online NUMA nodes, and
 * round the online CPUs within each node.
 */
static int vbhp_fill_cpu(unsigned int i)
{
	unsigned int n = i % num_online_nodes(), k;
	int nid, cpu;

	for_each_online_node(nid)
		if (!n--)
			break;
	k = i / num_online_nodes();
	k %= max(1U, cpumask_weight_and(cpumask_of_node(nid),
					cpu_online_mask));
	for_each_cpu_and(cpu, cpumask_of_node(nid), cpu_online_mask)
		if (!k--)
			return cpu;
	return raw_smp_processor_id();
}

/* Start a round of the workers toward @want frames, @left at most. */
static void vbhp_fill_start(struct vbhp *vb, unsigned long want,
			    unsigned long left)
{
	unsigned int i;

	spin_lock(&vb->fill_lock);
	vb->fill_want = want;
	vb->fill_left = left;
	vb->fill_stop = false;
	vb->fill_running = vb->nr_fillers;
	spin_unlock(&vb->fill_lock);
	for (i = 0; i < vb->nr_fillers; i++) {
		vb->fillers[i].cpu = vbhp_fill_cpu(i);
		queue_work_on(vb->fillers[i].cpu, vb->fill_wq,
			      &vb->fillers[i].work);
	}
}

/*
 * Move what the workers handed over to @blocks; sets @done once they have
 * all finished.  True when there is something to do.
 */
static bool vbhp_fill_take(struct vbhp *vb, struct list_head *blocks,
			   bool *done)
{
	spin_lock(&vb->fill_lock);
	list_splice_tail_init(&vb->fill_list, blocks);
	*done = !vb->fill_running;
	spin_unlock(&vb->fill_lock);
	return *done || !list_empty(blocks);
}

static void vbhp_fill_stop(struct vbhp *vb)
{
	spin_lock(&vb->fill_lock);
	vb->fill_stop = true;
	spin_unlock(&vb->fill_lock);
}

/* A block the round will not send: back to the page allocator. */
static void vbhp_fill_drop(struct vbhp *vb, struct page *page)
{
	vbhp_blk_free(vb, page);
	vbhp_count(&vb->stats[VBHP_STAT_FILL_UNUSED], 1);
}

/*
 * One inflate round with the workers allocating: queue what they hand
 * over, as it arrives, until they are done.  Returns when every block
 * they allocated has been queued or freed.
 */
static void vbhp_fill_round(struct vbhp *vb, unsigned long want,
			    unsigned long left)
{
	struct page *page, *next;
	LIST_HEAD(blocks);
	bool done, ok = true;

	lockdep_assert_held(&vb->lock);
	vbhp_fill_start(vb, want, left);
	do {
		wait_event(vb->fill_wait, vbhp_fill_take(vb, &blocks, &done));
		list_for_each_entry_safe(page, next, &blocks, lru) {
			list_del(&page->lru);
			if (ok && !READ_ONCE(vb->od_abort))
				ok = vbhp_xfer_add(vb, page, true);
			else
				vbhp_fill_drop(vb, page);
		}
		if (!ok || READ_ONCE(vb->od_abort))
			vbhp_fill_stop(vb);
	} while (!done);
}

/* Resolve inflate_workers and set the workers up (none for one). */
static int vbhp_fill_init(struct vbhp *vb)
{
	unsigned int i;

	vb->nr_fillers = inflate_workers ?:
			 min_t(unsigned int, num_online_cpus(),
			       VBHP_AUTO_FILLERS);
	spin_lock_init(&vb->fill_lock);
	INIT_LIST_HEAD(&vb->fill_list);
	init_waitqueue_head(&vb->fill_wait);
	if (vb->nr_fillers == 1)
		return 0;
	vb->fillers = kcalloc(vb->nr_fillers, sizeof(*vb->fillers),
			      GFP_KERNEL);
	if (!vb->fillers)
		return -ENOMEM;
	vb->fill_wq = alloc_workqueue("vbhp_fill", WQ_UNBOUND,
				      vb->nr_fillers);
	if (!vb->fill_wq)
		goto out_free_fillers;
	for (i = 0; i < vb->nr_fillers; i++) {
		vb->fillers[i].vb = vb;
		INIT_WORK(&vb->fillers[i].work, vbhp_fill_fn);
	}
	return 0;

out_free_fillers:
	kfree(vb->fillers);
	vb->fillers = NULL;
	return -ENOMEM;
}

static void vbhp_fill_exit(struct vbhp *vb)
{
	if (vb->fill_wq)
		destroy_workqueue(vb->fill_wq);
	kfree(vb->fillers);
}

/*
 * Inflate toward @frames more, stopping after one round's worth; returns
 * how many frames the host accepted.
 */
/*
 * One inflate round with this task allocating alone (inflate_workers=1):
 * toward @want frames, @left at most.
 */
static void vbhp_inflate_alone(struct vbhp *vb, unsigned long want,
			       unsigned long left)
{
	unsigned long queued = 0;
	struct page *page;

	lockdep_assert_held(&vb->lock);
	while (queued < left && !READ_ONCE(vb->od_abort)) {
		page = vbhp_inflate_get_block(vb, want - queued);
		if (!page)
			break;
		queued += vbhp_order_frames(page_private(page));
		if (!vbhp_xfer_add(vb, page, true))
			break;
	}
}

static unsigned long vbhp_inflate(struct vbhp *vb, unsigned long frames)
{
	unsigned long before = vb->num_pages;
	unsigned int noio;

	lockdep_assert_held(&vb->lock);
	/*
	 * No I/O or filesystem reclaim on behalf of the balloon while it holds
	 * vb->lock: such reclaim can wait on tasks that wait on the lock.
	 */
	noio = memalloc_noio_save();
	vb->alloc_order = vb->max_order;
	if (vb->nr_fillers > 1)
		vbhp_fill_round(vb, frames, min(frames, vb->round_frames));
	else
		vbhp_inflate_alone(vb, frames, min(frames, vb->round_frames));
	memalloc_noio_restore(noio);
	vbhp_xfer_flush(vb, true);
	return vb->num_pages - before;
}

/*
 * Deflate toward @frames less, through the host, stopping after @budget
 * frames.  Block sizes follow @frames, not @budget, so that the end of a
 * round never splits a block.
 */
static void vbhp_deflate(struct vbhp *vb, unsigned long frames,
			 unsigned long budget)
{
	unsigned long queued = 0;
	struct page *page;

	lockdep_assert_held(&vb->lock);
	while (queued < min(frames, budget)) {
		page = vbhp_blk_pick(vb, frames - queued);
		if (!page)
			break;
		queued += vbhp_order_frames(page_private(page));
		if (!vbhp_xfer_add(vb, page, false))
			break;
	}
	vbhp_xfer_flush(vb, false);
}

/* ---- migration of order-0 blocks (the kernel's balloon API) ---- */

#ifdef CONFIG_BALLOON_MIGRATION
/*
 * Tell the host about one 4 KiB frame on its own, on the queue order-0
 * blocks travel on, and wait for the acknowledgment; false if the buffer
 * could not be sent or the device broke.  The queue is idle: every balloon
 * operation flushes before it drops vb->lock.
 */
static bool vbhp_xfer_tell_frame(struct vbhp *vb, unsigned long pfn,
				 bool inflate)
{
	struct vbhp_xfer *x = vbhp_xfer_for(vb, 0, inflate);
	struct vbhp_buf *buf = vbhp_xfer_cur(x);

	lockdep_assert_held(&vb->lock);
	if (x->inflight || buf->nr_pfns)
		return false;
	buf->pfns[buf->nr_pfns++] = cpu_to_virtio32(vb->vdev, pfn);
	if (!vbhp_xfer_send(vb, x))
		return false;
	while (x->inflight)
		if (!vbhp_xfer_wait(vb, x))
			return false;
	return true;
}

/*
 * The kernel moves ballooned order-0 block @page to @newpage (compaction,
 * CMA, memory offlining); both are locked.  MUST_TELL_HOST holds: the host
 * acknowledges the inflate of @newpage before it is told of the deflate of
 * @page, and @page goes back to the guest only after that acknowledgment
 * (the core frees it when we return 0).  The worker may hold vb->lock for
 * a whole round, and its own allocations may compact: trylock, -EAGAIN
 * and the kernel tries again later, as the in-tree driver does.
 */
static int vbhp_migratepage(struct balloon_dev_info *bdev,
			    struct page *newpage, struct page *page,
			    enum migrate_mode mode)
{
	struct vbhp *vb = container_of(bdev, struct vbhp, bdev);
	int rc = -EAGAIN;

	if (!mutex_trylock(&vb->lock)) {
		vbhp_count(&vb->stats[VBHP_STAT_MIGRATE_BUSY], 1);
		return -EAGAIN;
	}
	if (!vb->ready) {
		vbhp_count(&vb->stats[VBHP_STAT_MIGRATE_BUSY], 1);
		goto out;
	}
	/* The wire carries 32-bit frame numbers. */
	if (page_to_pfn(newpage) > U32_MAX) {
		rc = -ENOSPC;
		goto out;
	}
	if (!vbhp_xfer_tell_frame(vb, page_to_pfn(newpage), true))
		goto out;
	if (!vbhp_xfer_tell_frame(vb, page_to_pfn(page), false)) {
		/*
		 * @page stays ballooned; the kernel frees @newpage, so try to
		 * take it back from the host too.  Only a broken device or a
		 * failed DMA mapping gets here.
		 */
		vbhp_xfer_tell_frame(vb, page_to_pfn(newpage), false);
		goto out;
	}
	if (vb->adjust_managed && page_zone(page) != page_zone(newpage)) {
		adjust_managed_page_count(page, 1);
		adjust_managed_page_count(newpage, -1);
	}
	vbhp_count(&vb->stats[VBHP_STAT_MIGRATE], 1);
	rc = 0;
out:
	rc = vbhp_balloon_migrated(bdev, newpage, page, rc);
	mutex_unlock(&vb->lock);
	return rc;
}

static void vbhp_migrate_init(struct vbhp *vb)
{
	vb->bdev.migratepage = vbhp_migratepage;
}
#else
static inline void vbhp_migrate_init(struct vbhp *vb)
{
}
#endif

/* ---- on demand: deflating below the target (DEFLATE_ON_OOM) ---- */

/**
 * struct vbhp_od_req - one on-demand deflate.
 * @trigger: who asked.
 * @frames: give back at least this many 4 KiB frames, in whole blocks.
 * @max_zone: only blocks in this zone or a lower one.
 * @pfn_limit: only blocks that end at or below this frame.
 */
struct vbhp_od_req {
	enum vbhp_od_trigger trigger;
	unsigned long frames;
	enum zone_type max_zone;
	unsigned long pfn_limit;
};

static bool vbhp_od_fits(struct page *page, const struct vbhp_od_req *req)
{
	return page_zonenum(page) <= req->max_zone &&
	       page_to_pfn(page) + vbhp_order_frames(page_private(page)) <=
	       req->pfn_limit;
}

/* Whether every block fits @req. */
static bool vbhp_od_any(const struct vbhp_od_req *req)
{
	return req->max_zone == MAX_NR_ZONES - 1 && req->pfn_limit == ULONG_MAX;
}

/*
 * Find up to @want order-0 blocks that fit @req, moving them onto @taken
 * (or, with @taken NULL, only counting them); returns how many.  Only
 * vb->bdev's own calls reach that list, so the blocks are looked at off
 * it, in batches of one buffer's worth, and those not kept go back (the
 * kernel counts them as deflated and inflated again in /proc/vmstat).
 */
static unsigned long vbhp_od_take0(struct vbhp *vb,
				   const struct vbhp_od_req *req,
				   unsigned long want, struct list_head *taken)
{
	unsigned long left = vb->nr_blocks[0], found = 0, n;
	struct page *page, *next;
	LIST_HEAD(batch);
	LIST_HEAD(back);

	lockdep_assert_held(&vb->lock);
	if (vbhp_od_any(req)) {
		if (!taken)
			return min(want, left);
		return vbhp_blk0_unhold(vb, taken, min(want, left));
	}
	while (found < want && left) {
		n = vbhp_blk0_unhold(vb, &batch,
				     min(left, (unsigned long)VIRTIO_BALLOON_HP_PFNS_PER_BUF));
		if (!n)
			break;
		left -= n;
		list_for_each_entry_safe(page, next, &batch, lru) {
			if (found < want && vbhp_od_fits(page, req)) {
				found++;
				if (taken) {
					list_move_tail(&page->lru, taken);
					continue;
				}
			}
			list_move_tail(&page->lru, &back);
		}
	}
	vbhp_blk0_hold_list(vb, &back);
	return found;
}

/*
 * Take held blocks @req may take, smallest first, until they cover it (or
 * none is left), onto @taken in one pass; returns their frames.
 */
static unsigned long vbhp_od_take(struct vbhp *vb,
				  const struct vbhp_od_req *req,
				  struct list_head *taken)
{
	unsigned long frames;
	struct page *page, *next;
	unsigned int order;

	lockdep_assert_held(&vb->lock);
	frames = vbhp_od_take0(vb, req, req->frames, taken);
	for (order = 1; order < VBHP_NR_ORDERS; order++) {
		list_for_each_entry_safe(page, next, &vb->blocks[order], lru) {
			if (frames >= req->frames)
				return frames;
			if (!vbhp_od_fits(page, req))
				continue;
			vbhp_blk_unhold(vb, page);
			list_add_tail(&page->lru, taken);
			frames += vbhp_order_frames(order);
		}
	}
	return frames;
}

/* Frames held in blocks @req may take. */
static unsigned long vbhp_od_held(struct vbhp *vb, const struct vbhp_od_req *req)
{
	unsigned long frames;
	struct page *page;
	unsigned int order;

	lockdep_assert_held(&vb->lock);
	frames = vbhp_od_take0(vb, req, ULONG_MAX, NULL);
	for (order = 1; order < VBHP_NR_ORDERS; order++)
		list_for_each_entry(page, &vb->blocks[order], lru)
			if (vbhp_od_fits(page, req))
				frames += vbhp_order_frames(order);
	return frames;
}

static void vbhp_od_count(struct vbhp *vb, enum vbhp_od_trigger trigger,
			  unsigned long frames, unsigned long below_4g)
{
	vbhp_count(&vb->od_stats[trigger][VBHP_ODSTAT_EVENTS], 1);
	vbhp_count(&vb->od_stats[trigger][VBHP_ODSTAT_PAGES], frames);
	vbhp_count(&vb->stats[VBHP_STAT_OD_BELOW_4G], below_4g);
}

/*
 * Give back whole blocks covering @req through the host, below the target;
 * returns the frames given back.  Called with vb->lock held.
 */
static unsigned long vbhp_od_deflate(struct vbhp *vb,
				     const struct vbhp_od_req *req)
{
	/* A target the host writes once it sees "actual" drop ends the hold. */
	int gen = atomic_read(&vb->config_gen);
	unsigned long before = vb->num_pages, below_4g = 0, frames, given;
	struct page *page, *next;
	bool queued = true;
	LIST_HEAD(taken);

	lockdep_assert_held(&vb->lock);
	if (!vb->ready || !vb->deflate_on_oom || !vbhp_od_take(vb, req, &taken))
		return 0;
	list_for_each_entry_safe(page, next, &taken, lru) {
		list_del(&page->lru);
		if (!queued) {
			/* the device failed: the rest stays in the balloon */
			vbhp_blk_hold(vb, page);
			continue;
		}
		frames = vbhp_order_frames(page_private(page));
		queued = vbhp_xfer_add(vb, page, false);
		if (queued && page_to_pfn(page) + frames <= VBHP_4G_PFN)
			below_4g += frames;
	}
	vbhp_xfer_flush(vb, false);
	vbhp_cfg_update_actual(vb);
	given = before - vb->num_pages;
	if (!given)
		return 0;
	vb->od_hold = true;
	vb->od_hold_gen = gen;
	vbhp_od_count(vb, req->trigger, given, below_4g);
	return given;
}

/*
 * Reclaim must never wait for vb->lock: the worker allocates with it held
 * and its allocations can reach the shrinker.  If an inflate round of
 * another task holds it, ask that round to stop.
 */
static bool vbhp_od_trylock(struct vbhp *vb)
{
	struct task_struct *inflater;

	if (mutex_trylock(&vb->lock))
		return true;
	inflater = READ_ONCE(vb->inflater);
	if (inflater && inflater != current && !vbhp_fill_is_worker(vb))
		WRITE_ONCE(vb->od_abort, true);
	return false;
}

/*
 * Only an allocation that is stalling in direct reclaim is a shortage:
 * kswapd's background reclaim runs whenever free memory dips (see the
 * design comment), and drop_caches is no reason to give memory back.
 */
static bool vbhp_od_direct_reclaim(void)
{
	return current->reclaim_state && !current_is_kswapd();
}

/**
 * vbhp_od_zone_ok() - whether a zone still serves order-0 allocations
 * @zone: the zone
 * @top: the highest zone the allocation may use (its lowmem reserve applies)
 * @cma: whether the allocation may use free pages in CMA pageblocks (only
 *	movable ones may)
 *
 * The page allocator's fast path takes a page from any zone whose free
 * pages stay above the low watermark plus the lowmem reserve, as this
 * counts them; below it kswapd wakes, and below the min watermark an
 * allocation reclaims itself.
 *
 * Return: true if @zone has order-0 pages free above that mark.
 */
static bool vbhp_od_zone_ok(struct zone *zone, enum zone_type top, bool cma)
{
	long free = zone_page_state(zone, NR_FREE_PAGES);

	if (!populated_zone(zone))
		return false;
	if (!cma)
		free -= zone_page_state(zone, NR_FREE_CMA_PAGES);
	return free > (long)(low_wmark_pages(zone) + zone->lowmem_reserve[top]);
}

/**
 * vbhp_od_short() - whether memory is short for a reclaiming allocation
 * @gfp: the allocation's gfp mask
 *
 * Return: true if no zone @gfp may use, on any node, has order-0 pages free
 * above its low watermark.
 */
static bool vbhp_od_short(gfp_t gfp)
{
	enum zone_type top = gfp_zone(gfp), z;
	bool cma = gfp & __GFP_MOVABLE;
	int nid;

	for_each_online_node(nid)
		for (z = 0; z <= top; z++)
			if (vbhp_od_zone_ok(&NODE_DATA(nid)->node_zones[z], top,
					    cma))
				return false;
	return true;
}

/**
 * vbhp_od_needed() - whether a reclaiming allocation needs the balloon
 * @gfp: its gfp mask, from struct shrink_control (which has no order)
 *
 * Direct reclaim also runs for allocations above PAGE_ALLOC_COSTLY_ORDER
 * that fail only because no free block of their order is left, with plenty
 * of order-0 memory free.  Some of them must succeed (a driver's contiguous
 * DMA buffer), and the balloon holding the free 2 MiB blocks is then why
 * they fail: they get blocks.  Others are opportunistic and fall back to
 * smaller pages: a transparent huge page (every THP mask holds all of
 * GFP_TRANSHUGE_LIGHT) and any caller that asked not to retry
 * (__GFP_NORETRY: kvmalloc()'s kmalloc() attempt, SLUB's high-order slabs,
 * large page-cache folios).  Each of their reclaim passes would get a whole
 * block, and the balloon would become a huge-page pool; they get blocks
 * only when memory is really short (vbhp_od_short()).
 *
 * Return: true if the shrinker may deflate for @gfp.
 */
static bool vbhp_od_needed(gfp_t gfp)
{
	bool thp = (gfp & GFP_TRANSHUGE_LIGHT) == GFP_TRANSHUGE_LIGHT;

	if (!thp && !(gfp & __GFP_NORETRY))
		return true;
	return vbhp_od_short(gfp);
}

/*
 * Nothing to give to a caller that does not need it: then
 * vbhp_od_shrink_scan() is not called at all.
 */
static unsigned long vbhp_od_shrink_count(struct shrinker *shrinker,
					  struct shrink_control *sc)
{
	struct vbhp *vb = vbhp_shrinker_private(shrinker);

	if (!vbhp_od_direct_reclaim() || READ_ONCE(vb->test_no_shrinker) ||
	    !vbhp_od_needed(sc->gfp_mask))
		return 0;
	return READ_ONCE(vb->num_pages);
}

static unsigned long vbhp_od_shrink_scan(struct shrinker *shrinker,
					 struct shrink_control *sc)
{
	struct vbhp *vb = vbhp_shrinker_private(shrinker);
	struct vbhp_od_req req = {
		.trigger = VBHP_OD_SHRINKER,
		.frames = sc->nr_to_scan,
		.max_zone = gfp_zone(sc->gfp_mask),
		.pfn_limit = ULONG_MAX,
	};
	unsigned long freed;

	if (!vbhp_od_direct_reclaim() || !vbhp_od_trylock(vb))
		return SHRINK_STOP;
	freed = vbhp_od_deflate(vb, &req);
	mutex_unlock(&vb->lock);
	/*
	 * Tell reclaim the pages are back in the allocator, so it stops once
	 * it has enough, and end this scan loop: at a low priority, or with
	 * work deferred from a contended call, reclaim would otherwise keep
	 * calling and drain the whole balloon for one allocation.
	 */
	mm_account_reclaimed_pages(freed);
	return SHRINK_STOP;
}

/* The last resort before an OOM kill: give back VBHP_OOM_FRAMES. */
static int vbhp_od_oom_notify(struct notifier_block *nb, unsigned long unused,
			      void *parm)
{
	struct vbhp *vb = container_of(nb, struct vbhp, oom_nb);
	struct vbhp_od_req req = {
		.trigger = VBHP_OD_OOM,
		.frames = VBHP_OOM_FRAMES,
		.max_zone = MAX_NR_ZONES - 1,
		.pfn_limit = ULONG_MAX,
	};
	unsigned long *freed = parm;
	unsigned int tries, noreclaim;

	/*
	 * Never block on vb->lock here: its holder may be in reclaim, waiting
	 * on something the task that hit OOM holds.  An inflate round stops
	 * at the next block when asked; give it and a flush a second.
	 */
	for (tries = 0; !vbhp_od_trylock(vb); tries++) {
		if (tries == VBHP_OOM_LOCK_TRIES)
			return NOTIFY_OK;
		msleep(VBHP_OOM_LOCK_WAIT_MS);
	}
	/*
	 * Our caller holds oom_lock.  An allocation of ours that reclaimed
	 * (the ring's indirect descriptor table, or a debug kernel's own
	 * bookkeeping) would reach the OOM path, find the lock taken and
	 * retry for ever.  As in direct reclaim, allocate from the reserves
	 * or fail at once: the ring then uses direct descriptors.
	 */
	noreclaim = memalloc_noreclaim_save();
	*freed += vbhp_od_deflate(vb, &req);
	memalloc_noreclaim_restore(noreclaim);
	mutex_unlock(&vb->lock);
	return NOTIFY_OK;
}

/* Called by the worker under vb->lock: the host wrote a target since. */
static void vbhp_od_update_hold(struct vbhp *vb)
{
	lockdep_assert_held(&vb->lock);

	if (vb->od_hold && atomic_read(&vb->config_gen) != vb->od_hold_gen)
		vb->od_hold = false;
}

/* The shrinker and the OOM notifier, with DEFLATE_ON_OOM only. */
static int vbhp_od_init(struct vbhp *vb)
{
	int err;

	if (!vb->deflate_on_oom)
		return 0;
	vb->shrinker = shrinker_alloc(0, "%s", KBUILD_MODNAME);
	if (!vb->shrinker)
		return -ENOMEM;
	vb->shrinker->count_objects = vbhp_od_shrink_count;
	vb->shrinker->scan_objects = vbhp_od_shrink_scan;
	vb->shrinker->seeks = DEFAULT_SEEKS;
	vbhp_shrinker_set_private(vb->shrinker, vb);
	shrinker_register(vb->shrinker);
	vb->oom_nb.notifier_call = vbhp_od_oom_notify;
	err = register_oom_notifier(&vb->oom_nb);
	if (err)
		goto out_free_shrinker;
	return 0;

out_free_shrinker:
	shrinker_free(vb->shrinker);
	return err;
}

static void vbhp_od_exit(struct vbhp *vb)
{
	if (!vb->deflate_on_oom)
		return;
	unregister_oom_notifier(&vb->oom_nb);
	shrinker_free(vb->shrinker);
}

/* ---- page zeroing by the guest kernel: init_on_alloc, init_on_free ---- */

/*
 * Whether the kernel zeroes the pages the balloon allocates, or zeroed
 * them when they were freed (then it skips the zeroing at allocation).
 * Either way every ballooned page has been written by the guest, so the
 * host backs it before it discards it.  Fixed at boot: read once.
 */
static void vbhp_zero_init(struct vbhp *vb)
{
	vb->init_on_alloc = want_init_on_alloc(vbhp_blk_gfp(page_order));
	vb->init_on_free = want_init_on_free();
}

/*
 * Once per device: a target above a quarter of RAM while the kernel zeroes
 * pages says what that costs (bench/results.md) and how to avoid it.
 */
static void vbhp_zero_notice(struct vbhp *vb, unsigned long target)
{
	lockdep_assert_held(&vb->lock);
	if (vb->zero_noticed || !(vb->init_on_alloc || vb->init_on_free) ||
	    target <= vbhp_ram_pages(vb) / 4)
		return;
	vb->zero_noticed = true;
	dev_notice(&vb->vdev->dev, "target %lu MiB is over a quarter of RAM (%lu MiB) while the kernel zeroes pages (init_on_alloc=%d init_on_free=%d): the guest writes every page it balloons (make bench, TCG: 0.44 GiB/s per vCPU at order 9) and the host backs memory it then discards; ballooning at boot wants init_on_alloc=0 on the guest kernel command line, which trades a hardening default for start time\n",
		   target >> (20 - PAGE_SHIFT),
		   vbhp_ram_pages(vb) >> (20 - PAGE_SHIFT),
		   vb->init_on_alloc, vb->init_on_free);
}

/* ---- the worker: one round at a time toward the target ---- */

/*
 * Run the worker after @delay; an immediate request overrides a pending
 * retry, a retry never postpones a pending immediate run.
 */
static void vbhp_work_queue(struct vbhp *vb, unsigned long delay)
{
	unsigned long flags;

	spin_lock_irqsave(&vb->stop_lock, flags);
	if (!vb->stopping && delay)
		queue_delayed_work(system_freezable_wq, &vb->work, delay);
	else if (!vb->stopping)
		mod_delayed_work(system_freezable_wq, &vb->work, 0);
	spin_unlock_irqrestore(&vb->stop_lock, flags);
}

/* One round: move about round_frames toward the target, then requeue. */
static void vbhp_work_fn(struct work_struct *work)
{
	struct vbhp *vb = container_of(to_delayed_work(work), struct vbhp,
				       work);
	unsigned long target, want, got;
	long delay = -1;

	mutex_lock(&vb->lock);
	vbhp_od_update_hold(vb);
	target = vbhp_cfg_target(vb);
	vbhp_zero_notice(vb, target);
	if (target > vb->num_pages && !vb->od_hold) {
		want = target - vb->num_pages;
		WRITE_ONCE(vb->od_abort, false);
		WRITE_ONCE(vb->inflater, current);
		got = vbhp_inflate(vb, want);
		WRITE_ONCE(vb->inflater, NULL);
		if (READ_ONCE(vb->od_abort)) {
			/* Pressure stopped the round: back off, no hold. */
			vbhp_count(&vb->stats[VBHP_STAT_OD_ABORT], 1);
			delay = VBHP_RETRY_DELAY;
		} else if (got < min(want, vb->round_frames)) {
			vbhp_count(&vb->stats[VBHP_STAT_STALL], 1);
			delay = VBHP_RETRY_DELAY;
		} else if (vb->num_pages < target) {
			delay = 0;
		}
	} else if (target < vb->num_pages) {
		got = vb->num_pages;
		vbhp_deflate(vb, vb->num_pages - target, vb->round_frames);
		/* No progress: what is left is isolated for migration. */
		if (vb->num_pages > target)
			delay = vb->num_pages < got ? 0 : VBHP_ISOLATED_WAIT;
	}
	vbhp_cfg_update_actual(vb);
	if (vbhp_xfer_broken(vb)) {
		dev_err_once(&vb->vdev->dev, "device broken: the balloon stays at %lu pages\n",
			     vb->num_pages);
		delay = -1;
	}
	mutex_unlock(&vb->lock);

	if (delay >= 0)
		vbhp_work_queue(vb, delay);
}

/* ---- statistics queue (VIRTIO_BALLOON_F_STATS_VQ) ---- */

/*
 * Put one statistic in the buffer at @idx; returns the next free index.  A
 * tag the running kernel's uapi does not define is left out, as the
 * kernel's own driver would not send it either.
 */
static unsigned int vbhp_stats_set(struct vbhp *vb, unsigned int idx,
				   u16 tag, u64 val)
{
	if (!vbhp_stats_tag_defined(tag))
		return idx;
	vb->stats_buf[idx].tag = cpu_to_virtio16(vb->vdev, tag);
	vb->stats_buf[idx].val = cpu_to_virtio64(vb->vdev, val);
	return idx + 1;
}

static inline u64 vbhp_stats_bytes(unsigned long pages)
{
	return (u64)pages << PAGE_SHIFT;
}

#ifdef CONFIG_VM_EVENT_COUNTERS
/*
 * Allocations that stalled in direct reclaim, all zones: the kernel counts
 * them per zone (allocstall_dma ... allocstall_movable in /proc/vmstat).
 */
static unsigned long vbhp_stats_alloc_stalls(const unsigned long *ev)
{
	unsigned long sum = 0;
	int zone;

	for (zone = 0; zone < MAX_NR_ZONES; zone++)
		sum += ev[ALLOCSTALL_NORMAL - ZONE_NORMAL + zone];
	return sum;
}

/* Memory kswapd and direct reclaim scanned and reclaimed, in bytes. */
static unsigned int vbhp_stats_fill_reclaim(struct vbhp *vb, unsigned int idx,
					    const unsigned long *ev)
{
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_ASYNC_SCAN,
			     vbhp_stats_bytes(vbhp_reclaim_pages(ev, PGSCAN_KSWAPD)));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_DIRECT_SCAN,
			     vbhp_stats_bytes(vbhp_reclaim_pages(ev, PGSCAN_DIRECT)));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_ASYNC_RECLAIM,
			     vbhp_stats_bytes(vbhp_reclaim_pages(ev, PGSTEAL_KSWAPD)));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_DIRECT_RECLAIM,
			     vbhp_stats_bytes(vbhp_reclaim_pages(ev, PGSTEAL_DIRECT)));
	return idx;
}

/* The statistics that come from the vm event counters (/proc/vmstat). */
static unsigned int vbhp_stats_fill_events(struct vbhp *vb, unsigned int idx)
{
	unsigned long ev[NR_VM_EVENT_ITEMS];

	all_vm_events(ev);
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_SWAP_IN,
			     vbhp_stats_bytes(ev[PSWPIN]));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_SWAP_OUT,
			     vbhp_stats_bytes(ev[PSWPOUT]));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_MAJFLT, ev[PGMAJFAULT]);
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_MINFLT,
			     ev[PGFAULT] - ev[PGMAJFAULT]);
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_OOM_KILL, ev[OOM_KILL]);
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_ALLOC_STALL,
			     vbhp_stats_alloc_stalls(ev));
	idx = vbhp_stats_fill_reclaim(vb, idx, ev);
#ifdef CONFIG_HUGETLB_PAGE
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_HTLB_PGALLOC,
			     ev[HTLB_BUDDY_PGALLOC]);
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_HTLB_PGFAIL,
			     ev[HTLB_BUDDY_PGALLOC_FAIL]);
#endif
	return idx;
}
#else
static inline unsigned int vbhp_stats_fill_events(struct vbhp *vb,
						  unsigned int idx)
{
	return idx;
}
#endif

/*
 * Fill the statistics buffer with every tag the running kernel's uapi
 * defines (10 on 6.1, 16 from 6.10 on); returns the number of entries.
 */
static unsigned int vbhp_stats_fill(struct vbhp *vb)
{
	unsigned int idx = vbhp_stats_fill_events(vb, 0);
	struct sysinfo si;

	si_meminfo(&si);
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_MEMFREE,
			     vbhp_stats_bytes(si.freeram));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_MEMTOT,
			     vbhp_stats_bytes(si.totalram));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_AVAIL,
			     vbhp_stats_bytes(si_mem_available()));
	idx = vbhp_stats_set(vb, idx, VIRTIO_BALLOON_S_CACHES,
			     vbhp_stats_bytes(global_node_page_state(NR_FILE_PAGES)));
	return idx;
}

/* Hand the (refilled) statistics buffer to the host. */
static void vbhp_stats_push(struct vbhp *vb)
{
	struct scatterlist sg;
	unsigned int n = vbhp_stats_fill(vb);

	sg_init_one(&sg, vb->stats_buf, sizeof(vb->stats_buf[0]) * n);
	if (!virtqueue_add_outbuf(vb->stats_vq, &sg, 1, vb, GFP_KERNEL))
		virtqueue_kick(vb->stats_vq);
}

/* The host returned the statistics buffer: it wants fresh numbers. */
static void vbhp_stats_work_fn(struct work_struct *work)
{
	struct vbhp *vb = container_of(work, struct vbhp, stats_work);
	unsigned int len;

	if (virtqueue_get_buf(vb->stats_vq, &len))
		vbhp_stats_push(vb);
}

static void vbhp_stats_request(struct virtqueue *vq)
{
	struct vbhp *vb = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vb->stop_lock, flags);
	if (!vb->stopping)
		queue_work(system_freezable_wq, &vb->stats_work);
	spin_unlock_irqrestore(&vb->stop_lock, flags);
}

/* ---- free page reporting (VIRTIO_BALLOON_F_REPORTING) ---- */

/*
 * The page reporting core hands us free blocks of at least pageblock order
 * (2 MiB on x86, our block size) that it has taken off the free lists; the
 * host may discard them, and they go back to the free lists, marked as
 * reported, when our callback returns.  Ballooned blocks are allocated
 * memory, so they are never reported; a block the balloon gives back is
 * free memory like any other and may be reported later.
 */

/* Whether the report in flight came back (*@used) or the queue broke. */
static bool vbhp_report_collect(struct virtqueue *vq, bool *used)
{
	unsigned int len;

	if (!*used)
		*used = virtqueue_get_buf(vq, &len);
	return *used || virtqueue_is_broken(vq);
}

/*
 * Wait for the host to use the report; false if the queue broke first.
 * The pages must not be reused while the host may still discard them, so
 * the wait ends only on one of the two; it looks again every second, as
 * vbhp_xfer_wait() does, since a surprise removal may not call back.
 */
static bool vbhp_report_wait(struct vbhp *vb)
{
	bool used = false;

	while (!wait_event_timeout(vb->acked,
				   vbhp_report_collect(vb->report_vq, &used),
				   HZ))
		;
	return used;
}

static unsigned long vbhp_report_count_pages(struct scatterlist *sgl,
					     unsigned int nents)
{
	struct scatterlist *sg;
	unsigned long pages = 0;
	unsigned int i;

	for_each_sg(sgl, sg, nents, i)
		pages += sg->length >> PAGE_SHIFT;
	return pages;
}

/*
 * The page reporting core's callback, never run twice at once: one report
 * in flight.  The buffers are device-writable: the host may drop the pages.
 */
static int vbhp_report_send(struct page_reporting_dev_info *prdev,
			    struct scatterlist *sg, unsigned int nents)
{
	struct vbhp *vb = container_of(prdev, struct vbhp, report_dev);
	int err;

	err = virtqueue_add_inbuf(vb->report_vq, sg, nents, vb,
				  GFP_NOWAIT | __GFP_NOWARN);
	if (!err) {
		virtqueue_kick(vb->report_vq);
		err = vbhp_report_wait(vb) ? 0 : -EIO;
	}
	if (err) {
		vbhp_count(&vb->report_stats[VBHP_RSTAT_ERR], 1);
		return err;
	}
	vbhp_count(&vb->report_stats[VBHP_RSTAT_BUFS], 1);
	vbhp_count(&vb->report_stats[VBHP_RSTAT_PAGES],
		   vbhp_report_count_pages(sg, nents));
	return 0;
}

/*
 * Start reporting free memory (the queues are live).  A failure costs only
 * the feature: another device may hold the kernel's one reporting slot.
 */
static void vbhp_report_start(struct vbhp *vb)
{
	int err;

	if (!vb->report_vq)
		return;
	if (virtqueue_get_vring_size(vb->report_vq) < PAGE_REPORTING_CAPACITY) {
		dev_warn(&vb->vdev->dev, "reporting queue holds fewer than %u entries: free page reporting off\n",
			 PAGE_REPORTING_CAPACITY);
		return;
	}
	vb->report_dev.report = vbhp_report_send;
	vb->report_dev.order = pageblock_order;
	err = page_reporting_register(&vb->report_dev);
	if (err) {
		dev_warn(&vb->vdev->dev, "free page reporting off: registration failed (%d; another driver reports already?)\n",
			 err);
		return;
	}
	vb->report_on = true;
}

/* Stop reporting; returns once no report is in flight. */
static void vbhp_report_stop(struct vbhp *vb)
{
	if (!vb->report_on)
		return;
	page_reporting_unregister(&vb->report_dev);
	vb->report_on = false;
}

/* ---- /dev/virtio_balloon_hp: the ioctl ABI of the uapi header ---- */

/* Serialises ioctls against probe/remove; taken before vb->lock. */
static DEFINE_MUTEX(vbhp_ioc_lock);
/* The balloon the misc device speaks for (the first bound); under the lock. */
static struct vbhp *vbhp_ioc_vb;

/*
 * Read an argument struct that starts with its size: sizes from the first
 * version's (@min_size) up to a page are taken, a shorter (older) struct's
 * missing fields read as zero, and bytes we do not know must be zero.
 * Returns the caller's size, or a negative errno.
 */
static int vbhp_ioc_copy_in(void *karg, size_t ksize, size_t min_size,
			    void __user *uarg)
{
	u32 usize;
	int err;

	if (get_user(usize, (u32 __user *)uarg))
		return -EFAULT;
	if (usize < min_size || usize > PAGE_SIZE)
		return -EINVAL;
	err = copy_struct_from_user(karg, ksize, uarg, usize);
	if (err)
		return err == -E2BIG ? -EINVAL : err;
	return usize;
}

/* Write back what both sides know; the size field says how much that is. */
static int vbhp_ioc_copy_out(void __user *uarg, void *karg, size_t ksize,
			     u32 usize)
{
	u32 len = min_t(size_t, ksize, usize);

	*(u32 *)karg = len;
	return copy_to_user(uarg, karg, len) ? -EFAULT : 0;
}

/* Validate a deflate request into @req; -EINVAL changes nothing. */
static int vbhp_ioc_deflate_req(struct vbhp *vb,
				const struct virtio_balloon_hp_deflate *arg,
				struct vbhp_od_req *req)
{
	if (arg->flags & ~VIRTIO_BALLOON_HP_DEFLATE_FLAGS || arg->deflated ||
	    !arg->bytes || arg->bytes > (u64)vbhp_ram_pages(vb) << PAGE_SHIFT)
		return -EINVAL;
	req->trigger = VBHP_OD_IOCTL;
	req->frames = (arg->bytes + PAGE_SIZE - 1) >> PAGE_SHIFT;
	req->max_zone = MAX_NR_ZONES - 1;
	req->pfn_limit = ULONG_MAX;
	if (arg->flags & VIRTIO_BALLOON_HP_DEFLATE_BELOW_4G)
		req->pfn_limit = VBHP_4G_PFN;
	return 0;
}

static long vbhp_ioc_deflate(struct vbhp *vb,
			     struct virtio_balloon_hp_deflate *arg)
{
	struct vbhp_od_req req;
	int err;

	err = vbhp_ioc_deflate_req(vb, arg, &req);
	if (err)
		return err;
	/* An explicit request beats an inflate round in progress. */
	if (vb->deflate_on_oom && READ_ONCE(vb->inflater))
		WRITE_ONCE(vb->od_abort, true);
	mutex_lock(&vb->lock);
	if (!vb->deflate_on_oom)
		err = -EOPNOTSUPP;
	else if (!vb->ready)
		err = -EAGAIN;
	else if (vbhp_od_held(vb, &req) < req.frames)
		err = -ENOSPC;
	else
		arg->deflated = (u64)vbhp_od_deflate(vb, &req) << PAGE_SHIFT;
	mutex_unlock(&vb->lock);
	return err;
}

static u64 vbhp_ioc_bytes(atomic64_t *pages)
{
	return (u64)atomic64_read(pages) << PAGE_SHIFT;
}

static void vbhp_ioc_fill_od(struct vbhp *vb,
			     struct virtio_balloon_hp_stats *st)
{
	unsigned int t;

	for (t = 0; t < VBHP_OD_NUM; t++) {
		st->od_events[t] =
			atomic64_read(&vb->od_stats[t][VBHP_ODSTAT_EVENTS]);
		st->od_bytes[t] =
			vbhp_ioc_bytes(&vb->od_stats[t][VBHP_ODSTAT_PAGES]);
	}
	st->od_below_4g_bytes =
		vbhp_ioc_bytes(&vb->stats[VBHP_STAT_OD_BELOW_4G]);
}

static long vbhp_ioc_stats(struct vbhp *vb, struct virtio_balloon_hp_stats *st)
{
	unsigned int order;

	BUILD_BUG_ON(VBHP_NR_ORDERS > VIRTIO_BALLOON_HP_ORDERS);
	BUILD_BUG_ON(VBHP_OD_NUM > VIRTIO_BALLOON_HP_OD_NUM);
	memset(st, 0, sizeof(*st));
	mutex_lock(&vb->lock);
	st->block_order = vb->max_order;
	st->target_bytes = (u64)vbhp_cfg_target(vb) << PAGE_SHIFT;
	st->current_bytes = (u64)vb->num_pages << PAGE_SHIFT;
	for (order = 0; order < VBHP_NR_ORDERS; order++)
		st->held_blocks[order] = vb->nr_blocks[order];
	st->deflate_on_oom = vb->deflate_on_oom;
	st->hold = vb->od_hold;
	st->init_on_alloc = vb->init_on_alloc;
	st->init_on_free = vb->init_on_free;
	mutex_unlock(&vb->lock);
	vbhp_ioc_fill_od(vb, st);
	return 0;
}

/*
 * Commands match on type and number only: a grown struct keeps its number.
 * User memory is copied in before and out after vbhp_ioc_lock is held, so
 * a slow user page (userfaultfd, FUSE) never holds up remove().  A deflate
 * whose result cannot be copied out has still happened: -EFAULT then.
 */
static long vbhp_ioc_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	union {
		struct virtio_balloon_hp_deflate deflate;
		struct virtio_balloon_hp_stats stats;
	} karg;
	void __user *uarg = (void __user *)arg;
	unsigned int nr = _IOC_NR(cmd);
	bool deflate = nr == _IOC_NR(VIRTIO_BALLOON_HP_IOC_DEFLATE);
	size_t size = deflate ? sizeof(karg.deflate) : sizeof(karg.stats);
	long ret;
	int usize;

	BUILD_BUG_ON(sizeof(karg.deflate) != VIRTIO_BALLOON_HP_DEFLATE_SIZE_VER0);
	BUILD_BUG_ON(sizeof(karg.stats) != VIRTIO_BALLOON_HP_STATS_SIZE_VER1);
	if (_IOC_TYPE(cmd) != VIRTIO_BALLOON_HP_IOC_MAGIC ||
	    (!deflate && nr != _IOC_NR(VIRTIO_BALLOON_HP_IOC_STATS)))
		return -ENOTTY;
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	usize = vbhp_ioc_copy_in(&karg, size, deflate ?
				 VIRTIO_BALLOON_HP_DEFLATE_SIZE_VER0 :
				 VIRTIO_BALLOON_HP_STATS_SIZE_VER0, uarg);
	if (usize < 0)
		return usize;
	mutex_lock(&vbhp_ioc_lock);
	if (!vbhp_ioc_vb)
		ret = -ENODEV;
	else if (deflate)
		ret = vbhp_ioc_deflate(vbhp_ioc_vb, &karg.deflate);
	else
		ret = vbhp_ioc_stats(vbhp_ioc_vb, &karg.stats);
	mutex_unlock(&vbhp_ioc_lock);
	return ret ?: vbhp_ioc_copy_out(uarg, &karg, size, usize);
}

static const struct file_operations vbhp_ioc_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = vbhp_ioc_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice vbhp_ioc_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = KBUILD_MODNAME,
	.fops = &vbhp_ioc_fops,
	.mode = 0600,
};

static void vbhp_ioc_bind(struct vbhp *vb)
{
	mutex_lock(&vbhp_ioc_lock);
	if (!vbhp_ioc_vb)
		vbhp_ioc_vb = vb;
	mutex_unlock(&vbhp_ioc_lock);
}

static void vbhp_ioc_unbind(struct vbhp *vb)
{
	mutex_lock(&vbhp_ioc_lock);
	if (vbhp_ioc_vb == vb)
		vbhp_ioc_vb = NULL;
	mutex_unlock(&vbhp_ioc_lock);
}

/* ---- debugfs ---- */

#ifdef CONFIG_DEBUG_FS

static void vbhp_dbg_show_orders(struct seq_file *f, struct vbhp *vb)
{
	unsigned int order, s;

	for (order = 0; order <= vb->max_order; order++) {
		seq_printf(f, "held_o%u: %lu\n", order,
			   READ_ONCE(vb->nr_blocks[order]));
		for (s = 0; s < VBHP_OSTAT_NUM; s++)
			seq_printf(f, "%s_o%u: %lld\n",
				   vbhp_order_stat_names[s], order,
				   atomic64_read(&vb->ostats[order][s]));
	}
}

static void vbhp_dbg_show_od(struct seq_file *f, struct vbhp *vb)
{
	unsigned int t, s;

	seq_printf(f, "deflate_on_oom: %d\n", vb->deflate_on_oom);
	seq_printf(f, "od_hold: %d\n", READ_ONCE(vb->od_hold));
	for (t = 0; t < VBHP_OD_NUM; t++)
		for (s = 0; s < VBHP_ODSTAT_NUM; s++)
			seq_printf(f, "od_%s_%s: %lld\n", vbhp_od_names[t],
				   vbhp_od_stat_names[s],
				   atomic64_read(&vb->od_stats[t][s]));
}

/*
 * Reporting, and the poison value as the host holds it: read back from the
 * device's config, so it shows what the host stored, not what we wrote.
 */
static void vbhp_dbg_show_report(struct seq_file *f, struct vbhp *vb)
{
	unsigned int s;
	u32 val = 0;

	seq_printf(f, "reporting: %d\n", READ_ONCE(vb->report_on));
	for (s = 0; s < VBHP_RSTAT_NUM; s++)
		seq_printf(f, "report_%s: %lld\n", vbhp_report_stat_names[s],
			   atomic64_read(&vb->report_stats[s]));
	seq_printf(f, "page_poison: %d\n",
		   virtio_has_feature(vb->vdev, VIRTIO_BALLOON_F_PAGE_POISON));
	if (virtio_has_feature(vb->vdev, VIRTIO_BALLOON_F_PAGE_POISON))
		virtio_cread_le(vb->vdev, struct virtio_balloon_hp_config,
				poison_val, &val);
	seq_printf(f, "host_poison_val: %u\n", val);
}

static int vbhp_dbg_stats_show(struct seq_file *f, void *unused)
{
	struct vbhp *vb = f->private;
	struct vbhp_xfer *x;
	unsigned int i, s;

	seq_printf(f, "target: %lu\n", vbhp_cfg_target(vb));
	seq_printf(f, "current: %lu\n", READ_ONCE(vb->num_pages));
	seq_printf(f, "page_order: %u\n", vb->max_order);
	seq_printf(f, "hp_order: %u\n", vb->hp_order);
	seq_printf(f, "whole_blocks: %d\n", vb->xfer[VBHP_XFER_INFLATE].whole_blocks);
	seq_printf(f, "alloc_order: %u\n", READ_ONCE(vb->alloc_order));
	seq_printf(f, "inflate_workers: %u\n", vb->nr_fillers);
	seq_printf(f, "reserve_pages: %lu\n", vb->reserve_pages);
	seq_printf(f, "init_on_alloc: %d\n", vb->init_on_alloc);
	seq_printf(f, "init_on_free: %d\n", vb->init_on_free);
	for (i = 0; i < VBHP_XFER_NUM; i++) {
		x = &vb->xfer[i];
		seq_printf(f, "%s_inflight: %u\n", vbhp_xfer_names[i],
			   READ_ONCE(x->inflight));
		seq_printf(f, "%s_max_inflight: %u\n", vbhp_xfer_names[i],
			   x->nr_slots);
		for (s = 0; s < VBHP_XSTAT_NUM; s++)
			seq_printf(f, "%s_%s: %lld\n", vbhp_xfer_names[i],
				   vbhp_xfer_stat_names[s],
				   atomic64_read(&x->stats[s]));
	}
	for (s = 0; s < VBHP_STAT_NUM; s++)
		seq_printf(f, "%s: %lld\n", vbhp_stat_names[s],
			   atomic64_read(&vb->stats[s]));
	for (i = 0; vb->fillers && i < vb->nr_fillers; i++)
		seq_printf(f, "inflate_worker%u_blocks: %lld\n", i,
			   atomic64_read(&vb->fillers[i].blocks));
	vbhp_dbg_show_od(f, vb);
	vbhp_dbg_show_report(f, vb);
	vbhp_dbg_show_orders(f, vb);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vbhp_dbg_stats);

#ifdef VBHP_TEST_HOOKS

/* Fill the current buffer of @x from "pfn pfn ..."; -EINVAL on bad input. */
static int vbhp_dbg_parse_pfns(struct vbhp_xfer *x, char *list)
{
	struct vbhp_buf *buf = vbhp_xfer_cur(x);
	char *tok;
	u32 pfn;

	while ((tok = strsep(&list, " \t"))) {
		if (!*tok)
			continue;
		if (buf->nr_pfns == VIRTIO_BALLOON_HP_PFNS_PER_BUF ||
		    kstrtou32(tok, 0, &pfn)) {
			buf->nr_pfns = 0;
			return -EINVAL;
		}
		buf->pfns[buf->nr_pfns++] = cpu_to_virtio32(x->vq->vdev, pfn);
	}
	return buf->nr_pfns ? 0 : -EINVAL;
}

/*
 * Test builds only: writing "QUEUE PFN..." (at most 256 PFNs) sends those
 * raw frame numbers in one buffer on QUEUE and returns once the host
 * acknowledged it, so a test can feed the host malformed buffers.  No
 * blocks change hands, and nothing stops a test from naming memory the
 * guest uses: the host would discard it.
 */
static ssize_t vbhp_dbg_inject_write(struct file *file,
				     const char __user *ubuf, size_t len,
				     loff_t *ppos)
{
	struct vbhp *vb = file->private_data;
	struct vbhp_xfer *x = NULL;
	char *kbuf, *list, *name;
	unsigned int i;
	int err;

	if (len >= PAGE_SIZE)
		return -EINVAL;
	kbuf = memdup_user_nul(ubuf, len);
	if (IS_ERR(kbuf))
		return PTR_ERR(kbuf);
	list = strim(kbuf);
	name = strsep(&list, " \t");
	for (i = 0; i < VBHP_XFER_NUM; i++)
		if (!strcmp(name, vbhp_xfer_names[i]) && vb->xfer[i].vq)
			x = &vb->xfer[i];
	err = -EINVAL;
	if (x && list) {
		mutex_lock(&vb->lock);
		err = vbhp_dbg_parse_pfns(x, list);
		if (!err)
			vbhp_xfer_flush(vb, x->inflate);
		mutex_unlock(&vb->lock);
	}
	kfree(kbuf);
	return err ?: len;
}

static const struct file_operations vbhp_dbg_inject_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vbhp_dbg_inject_write,
};

/* Test builds only: writing to <module>_break breaks the device. */
static ssize_t vbhp_dbg_break_write(struct file *file,
				    const char __user *ubuf, size_t len,
				    loff_t *ppos)
{
	struct vbhp *vb = file->private_data;

	virtio_break_device(vb->vdev);
	wake_up(&vb->acked);
	return len;
}

static const struct file_operations vbhp_dbg_break_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vbhp_dbg_break_write,
};

/*
 * Test builds only: writing "read" or "write" to <module>_touch reads or
 * writes the first byte of a block the balloon holds, the largest one: the
 * one access the driver must never make.  The guard host (the reference
 * host's guard=on) has unmapped that memory and dies on it; any other host
 * serves it, and the hook logs the byte.  -ENOENT with an empty balloon.
 */
static ssize_t vbhp_dbg_touch_write(struct file *file,
				    const char __user *ubuf, size_t len,
				    loff_t *ppos)
{
	struct vbhp *vb = file->private_data;
	struct page *page = NULL;
	char cmd[8] = {};
	bool write;
	int order;
	u8 *p;

	if (copy_from_user(cmd, ubuf, min(len, sizeof(cmd) - 1)))
		return -EFAULT;
	strim(cmd);
	if (!strcmp(cmd, "read"))
		write = false;
	else if (!strcmp(cmd, "write"))
		write = true;
	else
		return -EINVAL;

	mutex_lock(&vb->lock);
	for (order = VBHP_NR_ORDERS - 1; order >= 0; order--) {
		page = list_first_entry_or_null(&vb->blocks[order],
						struct page, lru);
		if (page)
			break;
	}
	if (page) {
		p = page_address(page);
		pr_info("test hook: %s ballooned pfn %#lx (order %d)\n",
			cmd, page_to_pfn(page), order);
		if (write)
			WRITE_ONCE(*p, 0x5a);
		pr_info("test hook: ballooned pfn %#lx holds %#x\n",
			page_to_pfn(page), READ_ONCE(*p));
	}
	mutex_unlock(&vb->lock);
	return page ? len : -ENOENT;
}

static const struct file_operations vbhp_dbg_touch_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vbhp_dbg_touch_write,
};

/*
 * Test builds only: writing Y to <module>_no_shrinker makes the shrinker
 * report nothing, so that a test reaches the OOM notifier; a number in
 * <module>_fail_sends makes that many buffers fail to be queued;
 * <module>_break breaks the device as a surprise removal does; Y in
 * <module>_fail_restore makes the next restore fail; <module>_touch
 * touches a ballooned block.
 */
static void vbhp_dbg_init_hooks(struct vbhp *vb)
{
	vb->debugfs_inject = debugfs_create_file(KBUILD_MODNAME "_inject",
						 0200, NULL, vb,
						 &vbhp_dbg_inject_fops);
	debugfs_create_bool(KBUILD_MODNAME "_no_shrinker", 0600, NULL,
			    &vb->test_no_shrinker);
	debugfs_create_u32(KBUILD_MODNAME "_fail_sends", 0600, NULL,
			   &vb->test_fail_sends);
	debugfs_create_file(KBUILD_MODNAME "_break", 0200, NULL, vb,
			    &vbhp_dbg_break_fops);
	debugfs_create_bool(KBUILD_MODNAME "_fail_restore", 0600, NULL,
			    &vb->test_fail_restore);
	debugfs_create_file(KBUILD_MODNAME "_touch", 0200, NULL, vb,
			    &vbhp_dbg_touch_fops);
}

static bool vbhp_dbg_fail_restore(struct vbhp *vb)
{
	return vb->test_fail_restore;
}

static void vbhp_dbg_exit_hooks(struct vbhp *vb)
{
	debugfs_lookup_and_remove(KBUILD_MODNAME "_touch", NULL);
	debugfs_lookup_and_remove(KBUILD_MODNAME "_fail_restore", NULL);
	debugfs_lookup_and_remove(KBUILD_MODNAME "_break", NULL);
	debugfs_lookup_and_remove(KBUILD_MODNAME "_fail_sends", NULL);
	debugfs_lookup_and_remove(KBUILD_MODNAME "_no_shrinker", NULL);
	debugfs_remove(vb->debugfs_inject);
}

#else

static inline void vbhp_dbg_init_hooks(struct vbhp *vb)
{
}

static inline bool vbhp_dbg_fail_restore(struct vbhp *vb)
{
	return false;
}

static inline void vbhp_dbg_exit_hooks(struct vbhp *vb)
{
}

#endif /* VBHP_TEST_HOOKS */

static void vbhp_dbg_init(struct vbhp *vb)
{
	vb->debugfs = debugfs_create_file(KBUILD_MODNAME, 0444, NULL, vb,
					  &vbhp_dbg_stats_fops);
	vbhp_dbg_init_hooks(vb);
}

static void vbhp_dbg_exit(struct vbhp *vb)
{
	vbhp_dbg_exit_hooks(vb);
	debugfs_remove(vb->debugfs);
}

#else

static inline void vbhp_dbg_init(struct vbhp *vb)
{
}

static inline void vbhp_dbg_exit(struct vbhp *vb)
{
}

static inline bool vbhp_dbg_fail_restore(struct vbhp *vb)
{
	return false;
}

#endif /* CONFIG_DEBUG_FS */

/* ---- sysfs: the balloon's size, for boot scripts ---- */

/*
 * /sys/bus/virtio/devices/virtioN/balloon/ while the driver is bound (the
 * driver core adds the group after probe() and removes it before
 * remove()), both the config fields of the same names, in 4 KiB pages:
 * num_pages, what the host asks the balloon to hold (read from the device
 * at each read); actual, what the driver last told the host it holds (a
 * count of blocks the host acknowledged).  The Debian package's initramfs
 * script waits on them: debugfs may be locked down where sysfs is not.
 */
static ssize_t vbhp_sysfs_num_pages_show(struct device *dev,
					 struct device_attribute *attr,
					 char *buf)
{
	struct vbhp *vb = dev_to_virtio(dev)->priv;

	return sysfs_emit(buf, "%lu\n", vbhp_cfg_target(vb));
}

static ssize_t vbhp_sysfs_actual_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	struct vbhp *vb = dev_to_virtio(dev)->priv;

	return sysfs_emit(buf, "%lu\n", READ_ONCE(vb->reported));
}

static struct device_attribute vbhp_sysfs_num_pages =
	__ATTR(num_pages, 0444, vbhp_sysfs_num_pages_show, NULL);
static struct device_attribute vbhp_sysfs_actual =
	__ATTR(actual, 0444, vbhp_sysfs_actual_show, NULL);

static struct attribute *vbhp_sysfs_attrs[] = {
	&vbhp_sysfs_num_pages.attr,
	&vbhp_sysfs_actual.attr,
	NULL
};

static const struct attribute_group vbhp_sysfs_group = {
	.name = "balloon",
	.attrs = vbhp_sysfs_attrs,
};

static const struct attribute_group *vbhp_sysfs_groups[] = {
	&vbhp_sysfs_group,
	NULL
};

/* ---- virtio device: probe and remove ---- */

/*
 * Queues in device order; a NULL name skips a queue whose feature is not
 * negotiated, so the hp queues follow the last negotiated one.
 */
enum {
	VBHP_VQ_INFLATE,
	VBHP_VQ_DEFLATE,
	VBHP_VQ_STATS,
	VBHP_VQ_REPORTING,
	VBHP_VQ_HP_INFLATE,
	VBHP_VQ_HP_DEFLATE,
	VBHP_VQ_NUM,
};

static int vbhp_dev_find_vqs(struct vbhp *vb)
{
	struct virtqueue_info info[VBHP_VQ_NUM] = {
		[VBHP_VQ_INFLATE] = { "inflate", vbhp_xfer_done },
		[VBHP_VQ_DEFLATE] = { "deflate", vbhp_xfer_done },
	};
	struct virtqueue *vqs[VBHP_VQ_NUM] = {};
	int err;

	if (virtio_has_feature(vb->vdev, VIRTIO_BALLOON_F_STATS_VQ))
		info[VBHP_VQ_STATS] =
			(struct virtqueue_info){ "stats", vbhp_stats_request };
	if (virtio_has_feature(vb->vdev, VIRTIO_BALLOON_F_REPORTING))
		info[VBHP_VQ_REPORTING] =
			(struct virtqueue_info){ "reporting", vbhp_xfer_done };
	if (vb->hp_order) {
		info[VBHP_VQ_HP_INFLATE] =
			(struct virtqueue_info){ "hp_inflate", vbhp_xfer_done };
		info[VBHP_VQ_HP_DEFLATE] =
			(struct virtqueue_info){ "hp_deflate", vbhp_xfer_done };
	}
	err = virtio_find_vqs(vb->vdev, VBHP_VQ_NUM, vqs, info, NULL);
	if (err)
		return err;
	vb->xfer[VBHP_XFER_INFLATE].vq = vqs[VBHP_VQ_INFLATE];
	vb->xfer[VBHP_XFER_DEFLATE].vq = vqs[VBHP_VQ_DEFLATE];
	vb->xfer[VBHP_XFER_HP_INFLATE].vq = vqs[VBHP_VQ_HP_INFLATE];
	vb->xfer[VBHP_XFER_HP_DEFLATE].vq = vqs[VBHP_VQ_HP_DEFLATE];
	vb->stats_vq = vqs[VBHP_VQ_STATS];
	vb->report_vq = vqs[VBHP_VQ_REPORTING];
	return 0;
}

/*
 * Delete the virtqueues of the reset device and forget every pointer to
 * them.  Buffers the device never returned (it broke) are detached first:
 * that frees the ring's indirect descriptor tables for them, which
 * deleting the queues does not.  Our own books dropped them already.
 */
static void vbhp_dev_del_vqs(struct vbhp *vb)
{
	struct virtqueue *vq;
	unsigned int i;
	void *token;

	virtio_device_for_each_vq(vb->vdev, vq) {
		do {
			token = virtqueue_detach_unused_buf(vq);
		} while (token);
	}
	vb->vdev->config->del_vqs(vb->vdev);
	for (i = 0; i < VBHP_XFER_NUM; i++)
		vb->xfer[i].vq = NULL;
	vb->stats_vq = NULL;
	vb->report_vq = NULL;
}

static void vbhp_dev_free_xfers(struct vbhp *vb)
{
	struct vbhp_xfer *x;
	unsigned int i, j;

	for (i = 0; i < VBHP_XFER_NUM; i++) {
		x = &vb->xfer[i];
		for (j = 0; x->ring && j < x->nr_slots; j++)
			kfree(x->ring[j].pfns);
		kfree(x->ring);
		x->ring = NULL;
	}
}

static int vbhp_dev_alloc_xfers(struct vbhp *vb)
{
	unsigned int i;
	int err;

	for (i = 0; i < VBHP_XFER_NUM; i++) {
		err = vbhp_xfer_setup(vb, i);
		if (err)
			goto out_free_xfers;
	}
	return 0;

out_free_xfers:
	vbhp_dev_free_xfers(vb);
	return err;
}

/* Memory inflation leaves available: reserve_mb, or 1/32 of RAM. */
static unsigned long vbhp_dev_reserve_pages(void)
{
	unsigned long pages;

	if (reserve_mb)
		return (unsigned long)reserve_mb << (20 - PAGE_SHIFT);
	pages = totalram_pages() / 32;
	return clamp(pages, 32UL << (20 - PAGE_SHIFT),
		     1024UL << (20 - PAGE_SHIFT));
}

/* The host's hp block order; 0 when this guest cannot use it. */
static u32 vbhp_dev_hp_order(struct virtio_device *vdev)
{
	u32 order;

	virtio_cread_le(vdev, struct virtio_balloon_hp_config, hp_block_order,
			&order);
	return order >= 1 && order <= page_order ? order : 0;
}

/*
 * What a freed page holds, for a host that must not discard it otherwise:
 * zero with init_on_free, else (page_poison=1) the poison byte in each
 * byte.  With neither, vbhp_validate() declined VIRTIO_BALLOON_F_PAGE_POISON.
 */
static u32 vbhp_dev_poison_val(void)
{
	if (want_init_on_free())
		return 0;
	return PAGE_POISON * 0x01010101U;
}

/*
 * Negotiated features that size the device; read once here, so a host
 * that changes hp_block_order after vbhp_validate() cannot change the
 * order the queues and the block lists were set up for.
 */
static int vbhp_dev_init_features(struct vbhp *vb)
{
	struct virtio_device *vdev = vb->vdev;

	vb->max_order = page_order;
	if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_HP_BLOCKS)) {
		vb->hp_order = vbhp_dev_hp_order(vdev);
		if (!vb->hp_order) {
			dev_err(&vdev->dev, "hp_block_order changed after feature negotiation\n");
			return -EINVAL;
		}
		vb->max_order = vb->hp_order;
	}
	/* As upstream: with DEFLATE_ON_OOM ballooned memory stays in MemTotal. */
	vb->deflate_on_oom = virtio_has_feature(vdev,
						VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
	vb->adjust_managed = !vb->deflate_on_oom;
	if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_POISON))
		vb->poison_val = vbhp_dev_poison_val();
	return 0;
}

static void vbhp_dev_init_state(struct vbhp *vb, struct virtio_device *vdev)
{
	unsigned int order;

	vb->vdev = vdev;
	mutex_init(&vb->lock);
	spin_lock_init(&vb->stop_lock);
	INIT_DELAYED_WORK(&vb->work, vbhp_work_fn);
	INIT_WORK(&vb->stats_work, vbhp_stats_work_fn);
	init_waitqueue_head(&vb->acked);
	for (order = 0; order < VBHP_NR_ORDERS; order++)
		INIT_LIST_HEAD(&vb->blocks[order]);
	balloon_devinfo_init(&vb->bdev);
	vbhp_migrate_init(vb);
	vb->reserve_pages = vbhp_dev_reserve_pages();
	atomic_set(&vb->config_gen, 0);
	vbhp_zero_init(vb);
}

/* Let the workers run and hand the host the stats buffer. */
static void vbhp_dev_start(struct vbhp *vb)
{
	mutex_lock(&vb->lock);
	vb->ready = true;
	/* A reset emptied the balloon: inflate toward the target again. */
	vb->od_hold = false;
	WRITE_ONCE(vb->od_abort, false);
	mutex_unlock(&vb->lock);
	/* Before the push: a quick host reply must not find us stopping. */
	spin_lock_irq(&vb->stop_lock);
	vb->stopping = false;
	spin_unlock_irq(&vb->stop_lock);
	if (vb->stats_vq)
		vbhp_stats_push(vb);
	vbhp_work_queue(vb, 0);
	vbhp_report_start(vb);
}

/* Stop the workers: nothing is queued after this until vbhp_dev_start(). */
static void vbhp_dev_stop(struct vbhp *vb)
{
	vbhp_report_stop(vb);
	spin_lock_irq(&vb->stop_lock);
	vb->stopping = true;
	spin_unlock_irq(&vb->stop_lock);
	cancel_delayed_work_sync(&vb->work);
	cancel_work_sync(&vb->stats_work);
}

/*
 * Tell the host what freed pages hold, before the device is live; a reset
 * forgets it, so restore tells it again.
 */
static void vbhp_dev_tell_poison(struct vbhp *vb)
{
	if (virtio_has_feature(vb->vdev, VIRTIO_BALLOON_F_PAGE_POISON))
		virtio_cwrite_le(vb->vdev, struct virtio_balloon_hp_config,
				 poison_val, &vb->poison_val);
}

/* Queues, buffers, device ready: what probe and restore share. */
static int vbhp_dev_setup(struct vbhp *vb)
{
	int err;

	err = vbhp_dev_find_vqs(vb);
	if (err)
		return err;
	err = vbhp_dev_alloc_xfers(vb);
	if (err)
		goto out_del_vqs;
	vbhp_dev_tell_poison(vb);
	virtio_device_ready(vb->vdev);
	return 0;

out_del_vqs:
	/*
	 * find_vqs() left the queues enabled, and only a reset disables them:
	 * without it the next probe finds them enabled and fails (-ENOENT).
	 */
	virtio_reset_device(vb->vdev);
	vbhp_dev_del_vqs(vb);
	return err;
}

/*
 * Every block goes back through the host.  Order-0 blocks isolated for
 * migration come back to the balloon list once the kernel has moved them
 * (which takes vb->lock) or given up: wait for them, without the lock.
 */
static void vbhp_dev_empty(struct vbhp *vb)
{
	unsigned int tries = 0;

	mutex_lock(&vb->lock);
	for (;;) {
		vbhp_deflate(vb, vb->num_pages, ULONG_MAX);
		if (!vb->nr_blocks[0] || vbhp_xfer_broken(vb) ||
		    ++tries > VBHP_ISOLATED_TRIES)
			break;
		mutex_unlock(&vb->lock);
		schedule_timeout_uninterruptible(VBHP_ISOLATED_WAIT);
		mutex_lock(&vb->lock);
	}
	vbhp_cfg_update_actual(vb);
	vb->ready = false;
	/* Blocks the host never acknowledged giving back must not be used. */
	if (vb->num_pages)
		dev_warn(&vb->vdev->dev, "device broken: %lu MiB stay ballooned for good\n",
			 vb->num_pages >> (20 - PAGE_SHIFT));
	mutex_unlock(&vb->lock);
}

/*
 * Empty the balloon, reset the device, free the queues.  A restore that
 * failed left no queues and an empty balloon: then only the reset is due.
 */
static void vbhp_dev_teardown(struct vbhp *vb)
{
	bool queues = vb->xfer[VBHP_XFER_INFLATE].vq;

	if (queues)
		vbhp_dev_empty(vb);
	virtio_reset_device(vb->vdev);
	if (!queues)
		return;
	vbhp_dev_free_xfers(vb);
	vbhp_dev_del_vqs(vb);
}

static int vbhp_probe(struct virtio_device *vdev)
{
	struct vbhp *vb;
	int err;

	vb = kzalloc(sizeof(*vb), GFP_KERNEL);
	if (!vb)
		return -ENOMEM;
	vdev->priv = vb;
	vbhp_dev_init_state(vb, vdev);
	err = vbhp_dev_init_features(vb);
	if (err)
		goto out_free_vb;
	vb->round_frames = max(VBHP_ROUND_FRAMES,
			       (unsigned long)VIRTIO_BALLOON_HP_PFNS_PER_BUF <<
			       vb->hp_order);
	err = vbhp_fill_init(vb);
	if (err)
		goto out_free_vb;
	err = vbhp_dev_setup(vb);
	if (err)
		goto out_fill_exit;
	err = vbhp_od_init(vb);
	if (err)
		goto out_teardown;
	vbhp_ioc_bind(vb);
	vbhp_dbg_init(vb);
	vbhp_dev_start(vb);
	dev_info(&vdev->dev, "blocks of order %u, %s, %u buffers in flight, %u inflate workers, reserve %lu MiB%s%s\n",
		 vb->max_order,
		 vb->hp_order ? "one frame number per block" : "4 KiB frames",
		 vb->xfer[VBHP_XFER_INFLATE].nr_slots, vb->nr_fillers,
		 vb->reserve_pages >> (20 - PAGE_SHIFT),
		 vb->deflate_on_oom ? ", deflate on demand" : "",
		 vb->report_on ? ", free page reporting" : "");
	return 0;

out_teardown:
	vbhp_dev_teardown(vb);
out_fill_exit:
	vbhp_fill_exit(vb);
out_free_vb:
	kfree(vb);
	return err;
}

static void vbhp_remove(struct virtio_device *vdev)
{
	struct vbhp *vb = vdev->priv;

	vbhp_dev_stop(vb);
	vbhp_dbg_exit(vb);
	vbhp_ioc_unbind(vb);
	vbhp_od_exit(vb);
	vbhp_dev_teardown(vb);
	vbhp_fill_exit(vb);
	kfree(vb);
}

#ifdef CONFIG_PM_SLEEP
/*
 * Suspend and hibernation reset the device: empty the balloon through the
 * host as remove() does, and inflate again toward the target on restore.
 */
static int vbhp_freeze(struct virtio_device *vdev)
{
	struct vbhp *vb = vdev->priv;

	vbhp_dev_stop(vb);
	vbhp_dev_teardown(vb);
	return 0;
}

/*
 * A failed restore leaves the device without queues and the balloon empty
 * (freeze emptied it); remove() then has nothing to give back.
 */
static int vbhp_restore(struct virtio_device *vdev)
{
	struct vbhp *vb = vdev->priv;
	int err;

	if (vbhp_dbg_fail_restore(vb))
		return -ENOMEM;
	err = vbhp_dev_setup(vb);
	if (err)
		return err;
	vbhp_dev_start(vb);
	return 0;
}
#endif

/*
 * Whether the host offers a queue this driver will not create: free page
 * hinting (never used), or reporting declined by vbhp_validate_report().
 * @offered: the host's features, as read once by vbhp_validate().
 */
static bool vbhp_offers_other_queues(struct virtio_device *vdev,
				     const u64 *offered)
{
	return virtio_features_test_bit(offered,
					VIRTIO_BALLOON_F_FREE_PAGE_HINT) ||
	       (virtio_features_test_bit(offered, VIRTIO_BALLOON_F_REPORTING) &&
		!virtio_has_feature(vdev, VIRTIO_BALLOON_F_REPORTING));
}

/*
 * As the in-tree driver: PAGE_POISON only when freed pages hold a value
 * (page_poison=1 or init_on_free=1), and then no free page reporting
 * unless the host accepts PAGE_POISON, i.e. can be told to keep the value.
 */
static void vbhp_validate_poison(struct virtio_device *vdev)
{
	bool init = want_init_on_free();

	if (!init && !page_poisoning_enabled_static()) {
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_PAGE_POISON);
		return;
	}
	if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_POISON) ||
	    !virtio_has_feature(vdev, VIRTIO_BALLOON_F_REPORTING))
		return;
	dev_info(&vdev->dev, "free page reporting off: %s is on and the host does not offer page-poison\n",
		 init ? "init_on_free" : "page_poison");
	__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_REPORTING);
}

/*
 * A host that numbers queues by what it offers (QEMU) has the free page
 * hinting queue before the reporting queue; this driver does not create
 * it, so it would send reports to the wrong queue: no reporting then.
 */
static void vbhp_validate_report(struct virtio_device *vdev,
				 const u64 *offered)
{
	if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_REPORTING) ||
	    !virtio_features_test_bit(offered,
				      VIRTIO_BALLOON_F_FREE_PAGE_HINT))
		return;
	dev_info(&vdev->dev, "free page reporting off: the host offers free page hinting, which this driver does not use\n");
	__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_REPORTING);
}

/*
 * Before features are final: decide poisoning and reporting, then huge
 * blocks, usable only if the host's order is one this guest allocates
 * (1 <= hp_block_order <= page_order).
 */
static int vbhp_validate(struct virtio_device *vdev)
{
	u64 offered[VIRTIO_FEATURES_U64S] = {};

	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config space is not readable\n");
		return -EINVAL;
	}
	virtio_get_features(vdev, offered);
	vbhp_validate_poison(vdev);
	vbhp_validate_report(vdev, offered);
	if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_HP_BLOCKS))
		return 0;
	/*
	 * A host that numbers queues by what it offers would put the hp
	 * queues after queues this driver does not create: use 4 KiB frames
	 * rather than disagree about the queues.
	 */
	if (vbhp_offers_other_queues(vdev, offered)) {
		dev_info(&vdev->dev, "host offers queues this driver does not use: sending 4 KiB frames\n");
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_HP_BLOCKS);
		return 0;
	}
	if (!vbhp_dev_hp_order(vdev)) {
		dev_info(&vdev->dev, "host block order unusable with page_order=%u: sending 4 KiB frames\n",
			 page_order);
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_HP_BLOCKS);
	}
	return 0;
}

/* The host wrote the config: a new target, which also ends a hold. */
static void vbhp_config_changed(struct virtio_device *vdev)
{
	struct vbhp *vb = vdev->priv;

	atomic_inc(&vb->config_gen);
	vbhp_work_queue(vb, 0);
}

static unsigned int vbhp_features[] = {
	VIRTIO_BALLOON_F_MUST_TELL_HOST,
	VIRTIO_BALLOON_F_STATS_VQ,
	VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
	VIRTIO_BALLOON_F_PAGE_POISON,
	VIRTIO_BALLOON_F_REPORTING,
	VIRTIO_BALLOON_F_HP_BLOCKS,
};

static const struct virtio_device_id vbhp_id_table[] = {
	{ VIRTIO_ID_BALLOON, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static struct virtio_driver vbhp_driver = {
	.feature_table = vbhp_features,
	.feature_table_size = ARRAY_SIZE(vbhp_features),
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.driver.dev_groups = vbhp_sysfs_groups,
	.id_table = vbhp_id_table,
	.validate = vbhp_validate,
	.probe = vbhp_probe,
	.remove = vbhp_remove,
	.config_changed = vbhp_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze = vbhp_freeze,
	.restore = vbhp_restore,
#endif
};

static int __init vbhp_init(void)
{
	int err;

	if (page_order > MAX_PAGE_ORDER) {
		pr_err("page_order=%u is invalid: valid range is 0..%u\n",
		       page_order, MAX_PAGE_ORDER);
		return -EINVAL;
	}
	if (whole_blocks &&
	    vbhp_order_frames(page_order) > VBHP_BUF_DESCS * VIRTIO_BALLOON_HP_PFNS_PER_BUF) {
		pr_err("whole_blocks=1 is invalid with page_order=%u: valid page_order is 0..%u\n",
		       page_order, ilog2(VBHP_BUF_DESCS * VIRTIO_BALLOON_HP_PFNS_PER_BUF) -
		       (PAGE_SHIFT - VIRTIO_BALLOON_HP_PFN_SHIFT));
		return -EINVAL;
	}
	if (!max_inflight || max_inflight > VBHP_MAX_INFLIGHT) {
		pr_err("max_inflight=%u is invalid: valid range is 1..%u\n",
		       max_inflight, VBHP_MAX_INFLIGHT);
		return -EINVAL;
	}
	if (inflate_workers > VBHP_MAX_FILLERS) {
		pr_err("inflate_workers=%u is invalid: valid range is 0..%u\n",
		       inflate_workers, VBHP_MAX_FILLERS);
		return -EINVAL;
	}
	err = misc_register(&vbhp_ioc_misc);
	if (err)
		return err;
	err = register_virtio_driver(&vbhp_driver);
	if (err)
		goto out_deregister_misc;
	return 0;

out_deregister_misc:
	misc_deregister(&vbhp_ioc_misc);
	return err;
}
module_init(vbhp_init);

static void __exit vbhp_exit(void)
{
	unregister_virtio_driver(&vbhp_driver);
	misc_deregister(&vbhp_ioc_misc);
}
module_exit(vbhp_exit);

MODULE_DEVICE_TABLE(virtio, vbhp_id_table);
MODULE_DESCRIPTION("Virtio balloon driver moving memory in huge-page blocks");
MODULE_LICENSE("GPL");
MODULE_VERSION(VBHP_VERSION);
