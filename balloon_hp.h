/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal data structures of virtio_balloon_hp.
 *
 * Lock order: vbhp_ioc_lock (mutex, the misc device's binding to a
 * balloon), then vbhp->lock (mutex, one balloon operation at a time), then
 * vbhp->stop_lock (spinlock, only around the "stopping" flag and work
 * queueing) or vbhp->fill_lock (spinlock, the hand-off from the inflate
 * workers; the workers take it without vbhp->lock).  Reclaim (the
 * shrinker) and the OOM notifier only ever trylock vbhp->lock.
 * Counters in vbhp->stats are atomic and read without locks.
 */
#ifndef _VBHP_BALLOON_HP_H
#define _VBHP_BALLOON_HP_H

#include <linux/atomic.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/page_reporting.h>
#include <linux/spinlock.h>
#include <linux/virtio.h>
#include <linux/virtio_balloon.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "compat.h"
#include "uapi/linux/virtio_balloon_hp.h"

#define VBHP_NR_ORDERS		(MAX_PAGE_ORDER + 1)

/*
 * Guest pages and wire frames are the same 4 KiB here.  Larger pages would
 * need targets rounded to whole pages and hp orders converted: not done.
 */
#if PAGE_SHIFT != VIRTIO_BALLOON_HP_PFN_SHIFT
#error "virtio_balloon_hp supports 4 KiB pages only"
#endif

/* The largest number of buffers one queue may have in flight. */
#define VBHP_MAX_INFLIGHT	64

/* Descriptors in one buffer's chain at most: a 4 MiB block of 4 KiB frames. */
#define VBHP_BUF_DESCS		4

/* The most inflate workers inflate_workers may ask for. */
#define VBHP_MAX_FILLERS	64

/* inflate_workers=0 (the default): one per online CPU, at most this many. */
#define VBHP_AUTO_FILLERS	16

/**
 * enum vbhp_xfer_id - the queues that carry frame numbers.
 * @VBHP_XFER_INFLATE: blocks given to the host, as 4 KiB frames.
 * @VBHP_XFER_DEFLATE: blocks taken back from the host, as 4 KiB frames.
 * @VBHP_XFER_HP_INFLATE: blocks of vbhp->hp_order given to the host, one
 *	frame number per block (VIRTIO_BALLOON_F_HP_BLOCKS).
 * @VBHP_XFER_HP_DEFLATE: blocks of vbhp->hp_order taken back.
 * @VBHP_XFER_NUM: number of transfer queues.
 */
enum vbhp_xfer_id {
	VBHP_XFER_INFLATE,
	VBHP_XFER_DEFLATE,
	VBHP_XFER_HP_INFLATE,
	VBHP_XFER_HP_DEFLATE,
	VBHP_XFER_NUM,
};

/**
 * enum vbhp_order_stat - counters kept for every block order.
 * @VBHP_OSTAT_ALLOC: blocks of this order allocated for the balloon.
 * @VBHP_OSTAT_ALLOC_FAIL: failed attempts to allocate a block of this order.
 * @VBHP_OSTAT_FREE: blocks of this order given back to the page allocator.
 * @VBHP_OSTAT_NUM: number of per-order counters.
 */
enum vbhp_order_stat {
	VBHP_OSTAT_ALLOC,
	VBHP_OSTAT_ALLOC_FAIL,
	VBHP_OSTAT_FREE,
	VBHP_OSTAT_NUM,
};

/**
 * enum vbhp_xfer_stat - counters kept for every transfer queue.
 * @VBHP_XSTAT_BUFS: buffers sent.
 * @VBHP_XSTAT_PFNS: 4 KiB frame numbers sent.
 * @VBHP_XSTAT_NUM: number of per-queue counters.
 */
enum vbhp_xfer_stat {
	VBHP_XSTAT_BUFS,
	VBHP_XSTAT_PFNS,
	VBHP_XSTAT_NUM,
};

/**
 * enum vbhp_stat - device-wide counters.
 * @VBHP_STAT_FALLBACK: times an inflate dropped to a lower order.
 * @VBHP_STAT_SPLIT: held blocks split into order-0 pages to deflate exactly.
 * @VBHP_STAT_STALL: inflate rounds stopped short (no memory, or reserve hit).
 * @VBHP_STAT_OD_BELOW_4G: pages deflated on demand that lay below 4 GiB.
 * @VBHP_STAT_OD_ABORT: inflate rounds stopped because reclaim, the OOM
 *	notifier or the ioctl wanted memory back (retried a second later).
 * @VBHP_STAT_XFER_ERR: buffers the virtqueue refused (a broken device, or
 *	no room to map them for DMA); their blocks were put back.
 * @VBHP_STAT_FILL_UNUSED: blocks the inflate workers allocated that their
 *	round did not send (it stopped early) and freed again.
 * @VBHP_STAT_MIGRATE: ballooned order-0 pages the kernel migrated (the
 *	host was told of the new page, then of the old one).
 * @VBHP_STAT_MIGRATE_BUSY: migrations refused because the balloon was busy
 *	(its lock held, or the device not ready); the kernel retries them.
 * @VBHP_STAT_NUM: number of device-wide counters.
 */
enum vbhp_stat {
	VBHP_STAT_FALLBACK,
	VBHP_STAT_SPLIT,
	VBHP_STAT_STALL,
	VBHP_STAT_OD_BELOW_4G,
	VBHP_STAT_OD_ABORT,
	VBHP_STAT_XFER_ERR,
	VBHP_STAT_FILL_UNUSED,
	VBHP_STAT_MIGRATE,
	VBHP_STAT_MIGRATE_BUSY,
	VBHP_STAT_NUM,
};

/**
 * enum vbhp_od_trigger - what asked for an on-demand deflate (below the
 *	host's target, VIRTIO_BALLOON_F_DEFLATE_ON_OOM only).  The values are
 *	the uapi's VIRTIO_BALLOON_HP_OD_* indexes.
 * @VBHP_OD_SHRINKER: direct reclaim ran our shrinker.
 * @VBHP_OD_OOM: the OOM notifier, the last resort before a kill.
 * @VBHP_OD_IOCTL: VIRTIO_BALLOON_HP_IOC_DEFLATE from user space.
 * @VBHP_OD_NUM: number of triggers.
 */
enum vbhp_od_trigger {
	VBHP_OD_SHRINKER = VIRTIO_BALLOON_HP_OD_SHRINKER,
	VBHP_OD_OOM = VIRTIO_BALLOON_HP_OD_OOM,
	VBHP_OD_IOCTL = VIRTIO_BALLOON_HP_OD_IOCTL,
	VBHP_OD_NUM,
};

/**
 * enum vbhp_od_stat - counters kept for every on-demand trigger.
 * @VBHP_ODSTAT_EVENTS: deflates that gave something back.
 * @VBHP_ODSTAT_PAGES: 4 KiB pages they gave back.
 * @VBHP_ODSTAT_NUM: number of per-trigger counters.
 */
enum vbhp_od_stat {
	VBHP_ODSTAT_EVENTS,
	VBHP_ODSTAT_PAGES,
	VBHP_ODSTAT_NUM,
};

/**
 * enum vbhp_report_stat - free page reporting counters.
 * @VBHP_RSTAT_BUFS: reports the host acknowledged.
 * @VBHP_RSTAT_PAGES: 4 KiB pages in them.
 * @VBHP_RSTAT_ERR: reports not sent or not answered (broken device); their
 *	pages went back to the free lists unreported.
 * @VBHP_RSTAT_NUM: number of reporting counters.
 */
enum vbhp_report_stat {
	VBHP_RSTAT_BUFS,
	VBHP_RSTAT_PAGES,
	VBHP_RSTAT_ERR,
	VBHP_RSTAT_NUM,
};

/**
 * struct vbhp_buf - one buffer of frame numbers, as sent to the host.
 * @pfns: the payload: 4 KiB frame numbers in the device's byte order
 *	(little-endian; guest-native for a legacy device, as the spec says),
 *	room for vbhp_xfer.buf_pfns of them; sent as one descriptor per
 *	VIRTIO_BALLOON_HP_PFNS_PER_BUF.
 * @nr_pfns: how many entries of @pfns are used.
 * @blocks: blocks whose last frame is in this buffer; they change hands
 *	(join the balloon, or go back to the guest) when this buffer and
 *	every buffer before it have been acknowledged.
 * @acked: the host has returned this buffer.
 *
 * Owned by the balloon worker under vbhp->lock.
 */
struct vbhp_buf {
	__virtio32 *pfns;
	unsigned int nr_pfns;
	struct list_head blocks;
	bool acked;
};

/**
 * struct vbhp_xfer - the pipeline of one transfer queue.
 * @vq: the virtqueue, or NULL when its feature is not negotiated.
 * @id: which queue this is.
 * @inflate: blocks on this queue join the balloon (else they leave it).
 * @pfn_order: each frame number names a block of 2^@pfn_order frames.
 * @whole_blocks: a block never spans two buffers (module parameter
 *	whole_blocks, 4 KiB queues only).
 * @buf_pfns: frame numbers a buffer holds: VIRTIO_BALLOON_HP_PFNS_PER_BUF,
 *	or a whole block of the largest order if that is more.
 * @ring: @nr_slots buffers used in turn.
 * @nr_slots: buffers that may be in flight at once (module parameter).
 * @head: index in @ring of the oldest buffer in flight.
 * @inflight: buffers sent and not yet retired; the buffer being filled is
 *	@ring[(@head + @inflight) % @nr_slots].
 * @stats: per-queue counters, enum vbhp_xfer_stat.
 *
 * All fields but @stats are protected by vbhp->lock; @inflight is also read
 * locklessly by debugfs.
 */
struct vbhp_xfer {
	struct virtqueue *vq;
	enum vbhp_xfer_id id;
	bool inflate;
	unsigned int pfn_order;
	bool whole_blocks;
	unsigned int buf_pfns;
	struct vbhp_buf *ring;
	unsigned int nr_slots;
	unsigned int head;
	unsigned int inflight;
	atomic64_t stats[VBHP_XSTAT_NUM];
};

/**
 * struct vbhp_filler - one inflate worker: allocates (and, with
 *	init_on_alloc, zeroes) blocks on its own CPU and hands them to the
 *	balloon worker, which alone sends them to the host.
 * @vb: the balloon it works for.
 * @work: runs vbhp_fill_fn() on @vb->fill_wq.
 * @cpu: the CPU it is queued on (its NUMA node is where it allocates).
 * @task: the task running @work, or NULL; written by the worker itself,
 *	read locklessly by reclaim (vbhp_od_trylock()) to recognise the
 *	balloon's own allocations.
 * @blocks: blocks this worker allocated, ever; atomic.
 */
struct vbhp_filler {
	struct vbhp *vb;
	struct work_struct work;
	int cpu;
	struct task_struct *task;
	atomic64_t blocks;
};

/**
 * struct vbhp - one virtio-balloon device driven by this module.
 * @vdev: the virtio device.
 * @lock: serialises balloon operations (inflate, deflate, teardown); taken
 *	first, before @stop_lock.
 * @stop_lock: protects @stopping against the config-change callback.
 * @stopping: set by remove and freeze (vbhp_dev_stop()); no work is
 *	queued while it is set.
 * @work: the balloon worker, moves the balloon toward the host's target.
 * @acked: woken by the virtqueue callbacks when the host returns a buffer.
 * @xfer: the inflate and deflate pipelines.
 * @blocks: held blocks, one list per order, linked through page->lru;
 *	protected by @lock.  The order-0 list stays empty: those blocks are
 *	on @bdev instead.
 * @bdev: the kernel's balloon list, which holds the order-0 blocks so that
 *	they can migrate; its own lock guards it, and it may lack blocks
 *	isolated for migration (still ours, still counted).
 * @nr_blocks: blocks held at each order (for order 0, on @bdev or isolated
 *	from it); written under @lock, read locklessly by debugfs.
 * @num_pages: 4 KiB frames the host has acknowledged as inflated (what
 *	"actual" reports); written under @lock.
 * @reported: the value of @num_pages last written to "actual"; written
 *	under @lock, read locklessly by sysfs.
 * @alloc_order: order the current inflate round allocates at; drops on
 *	failure and climbs back to @max_order at each new round; under @lock,
 *	and under @fill_lock too while inflate workers run.
 * @max_order: the largest block order this device uses: page_order, or
 *	the host's hp_block_order if that is smaller.
 * @hp_order: blocks of this order go on the hp queues; 0 without
 *	VIRTIO_BALLOON_F_HP_BLOCKS.
 * @round_frames: the most one worker round moves: 256 MiB, or one full hp
 *	buffer if that is more.
 * @reserve_pages: memory (pages) inflation always leaves available.
 * @adjust_managed: ballooned pages leave MemTotal (no DEFLATE_ON_OOM).
 * @ready: the queues exist and may carry buffers (between start and
 *	teardown); under @lock.
 * @deflate_on_oom: VIRTIO_BALLOON_F_DEFLATE_ON_OOM is negotiated: the
 *	shrinker, the OOM notifier and the deflate ioctl may go below the
 *	target.
 * @od_hold: after an on-demand deflate, inflation waits until the host
 *	writes a target again; under @lock.
 * @od_hold_gen: @config_gen when @od_hold was set; under @lock.
 * @config_gen: counts the host's config-change notifications; atomic.
 * @od_abort: reclaim, the OOM notifier or the ioctl wants the inflate
 *	round that is running to stop; set locklessly, cleared by the worker
 *	under @lock before each round.
 * @inflater: the task running an inflate round (so that its own
 *	allocations reaching the shrinker are recognised), or NULL; written
 *	under @lock, read locklessly.
 * @nr_fillers: inflate workers (inflate_workers, resolved at probe); 1 =
 *	the balloon worker allocates alone and @fillers is not used.
 * @fillers: the inflate workers, @nr_fillers of them when more than one.
 * @fill_wq: unbound workqueue the inflate workers run on (not freezable: a
 *	round that started before a freeze must be able to end).
 * @fill_lock: protects @fill_list, @fill_want, @fill_left, @fill_running,
 *	@fill_stop and, during a round, @alloc_order.
 * @fill_list: blocks allocated by the workers, not yet queued for the host.
 * @fill_want: 4 KiB frames still wanted to reach the target (block sizes
 *	follow it, so the end of a round does not cut blocks short).
 * @fill_left: 4 KiB frames this round may still claim (round_frames at
 *	most).
 * @fill_running: workers of this round that have not finished.
 * @fill_stop: the round wants no more blocks (enough, memory short, the
 *	device broke, or on-demand deflate asked for it).
 * @fill_wait: the balloon worker waits here for blocks or the workers' end.
 * @shrinker: gives blocks back to direct reclaim (with @deflate_on_oom).
 * @oom_nb: gives blocks back before an OOM kill (with @deflate_on_oom).
 * @od_stats: per-trigger counters, enum vbhp_od_stat.
 * @init_on_alloc: the guest kernel zeroes pages as it allocates them
 *	(want_init_on_alloc() for the balloon's gfp flags: init_on_alloc=1,
 *	on by default in Debian's kernels); read once at probe.
 * @init_on_free: the guest kernel zeroes pages as they are freed
 *	(want_init_on_free(), init_on_free=1); read once at probe.
 * @zero_noticed: the notice that a large target costs a zeroing pass
 *	has been printed; once per device, set under @lock.
 * @poison_val: what a freed page holds (0 with init_on_free, the page
 *	poison pattern with page_poison=1), told to the host when
 *	VIRTIO_BALLOON_F_PAGE_POISON is negotiated; set once at probe.
 * @report_vq: the free page reporting queue, or NULL when
 *	VIRTIO_BALLOON_F_REPORTING is not negotiated; set and cleared with the
 *	other queues, used only from @report_dev's callback.
 * @report_dev: our registration with the page reporting core, which
 *	serialises its callback (one report in flight).
 * @report_on: @report_dev is registered; written only by probe, remove,
 *	freeze and restore (vbhp_dev_start() and vbhp_dev_stop()), which the
 *	driver core serialises.
 * @report_stats: free page reporting counters, enum vbhp_report_stat.
 * @stats_vq: the statistics queue, or NULL when not negotiated.
 * @stats_work: refills and returns the statistics buffer.
 * @stats_buf: the statistics reported to the host; owned by @stats_work.
 * @ostats: per-order counters, enum vbhp_order_stat.
 * @stats: device-wide counters, enum vbhp_stat.
 * @debugfs: the debugfs stats file.
 * @debugfs_inject: the test-only injection file (VBHP_TEST_HOOKS builds).
 * @test_no_shrinker: the shrinker reports nothing, so that tests reach the
 *	OOM notifier; set only through a VBHP_TEST_HOOKS debugfs file.
 * @test_fail_sends: that many more buffers fail to be queued, as on a
 *	broken device; VBHP_TEST_HOOKS debugfs, decremented under @lock.
 * @test_fail_restore: the next restore fails before it sets up queues;
 *	VBHP_TEST_HOOKS debugfs.
 */
struct vbhp {
	struct virtio_device *vdev;
	struct mutex lock;		/* one balloon operation at a time */
	spinlock_t stop_lock;		/* guards @stopping */
	bool stopping;
	struct delayed_work work;
	wait_queue_head_t acked;
	struct vbhp_xfer xfer[VBHP_XFER_NUM];
	struct list_head blocks[VBHP_NR_ORDERS];
	struct balloon_dev_info bdev;
	unsigned long nr_blocks[VBHP_NR_ORDERS];
	unsigned long num_pages;
	unsigned long reported;
	unsigned int alloc_order;
	unsigned int max_order;
	unsigned int hp_order;
	unsigned long round_frames;
	unsigned long reserve_pages;
	bool adjust_managed;
	bool ready;
	bool deflate_on_oom;
	bool od_hold;
	int od_hold_gen;
	atomic_t config_gen;
	bool od_abort;
	struct task_struct *inflater;
	unsigned int nr_fillers;
	struct vbhp_filler *fillers;
	struct workqueue_struct *fill_wq;
	spinlock_t fill_lock;		/* the workers' hand-off */
	struct list_head fill_list;
	unsigned long fill_want;
	unsigned long fill_left;
	unsigned int fill_running;
	bool fill_stop;
	wait_queue_head_t fill_wait;
	struct shrinker *shrinker;
	struct notifier_block oom_nb;
	atomic64_t od_stats[VBHP_OD_NUM][VBHP_ODSTAT_NUM];
	bool init_on_alloc;
	bool init_on_free;
	bool zero_noticed;
	u32 poison_val;
	struct virtqueue *report_vq;
	struct page_reporting_dev_info report_dev;
	bool report_on;
	atomic64_t report_stats[VBHP_RSTAT_NUM];
	struct virtqueue *stats_vq;
	struct work_struct stats_work;
	struct virtio_balloon_stat stats_buf[VIRTIO_BALLOON_S_NR];
	atomic64_t ostats[VBHP_NR_ORDERS][VBHP_OSTAT_NUM];
	atomic64_t stats[VBHP_STAT_NUM];
	struct dentry *debugfs;
	struct dentry *debugfs_inject;
	bool test_no_shrinker;
	u32 test_fail_sends;
	bool test_fail_restore;
};

#endif /* _VBHP_BALLOON_HP_H */
