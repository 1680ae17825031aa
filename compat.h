/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every kernel-version difference virtio_balloon_hp depends on.
 *
 * The driver is written against the newest kernel API it supports (7.3);
 * this file fills that API in for older kernels, so that no other file tests
 * LINUX_VERSION_CODE or a version-dependent macro.  Where a newer kernel
 * changed a function's signature, the old kernel gets a static inline of
 * the same name and a macro that points the call at it.  Supported, and run
 * by the test suite: Debian 12's 6.1, Debian 13's 6.12 and trixie-backports'
 * 7.3.  Kernels between them should work but are neither built nor run.
 */
#ifndef _VBHP_COMPAT_H
#define _VBHP_COMPAT_H

#include <linux/version.h>
#include <linux/mmzone.h>
#include <linux/sched.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/swap.h>
#include <linux/virtio_balloon.h>
#include <linux/virtio_config.h>
#include <linux/vmstat.h>

/*
 * 6.8: MAX_PAGE_ORDER, the largest order the buddy allocator hands out
 * (inclusive).  6.4-6.7 called it MAX_ORDER; before 6.4 MAX_ORDER was
 * exclusive.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 4, 0)
#define MAX_PAGE_ORDER (MAX_ORDER - 1)
#elif LINUX_VERSION_CODE < KERNEL_VERSION(6, 8, 0)
#define MAX_PAGE_ORDER MAX_ORDER
#endif

/*
 * 6.11: virtio_find_vqs() takes one array of struct virtqueue_info instead
 * of parallel callbacks[] and names[] arrays.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 11, 0)
struct virtqueue_info {
	const char *name;
	vq_callback_t *callback;
	bool ctx;
};

static inline int vbhp_compat_find_vqs(struct virtio_device *vdev,
				       unsigned int nvqs,
				       struct virtqueue *vqs[],
				       struct virtqueue_info info[],
				       struct irq_affinity *desc)
{
	vq_callback_t *callbacks[8];
	const char *names[8];
	unsigned int i;

	if (WARN_ON(nvqs > ARRAY_SIZE(names)))
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		names[i] = info[i].name;
		callbacks[i] = info[i].callback;
	}
	return virtio_find_vqs(vdev, nvqs, vqs, callbacks, names, desc);
}

#define virtio_find_vqs vbhp_compat_find_vqs
#endif

/*
 * 6.18: a device may offer more than 64 feature bits; the transport reads
 * them with get_extended_features() into an array of u64, and
 * virtio_get_features() hides which op the transport has (on 7.x the
 * modern PCI transport leaves get_features NULL).  Before, get_features()
 * returned one u64.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 18, 0)
#define VIRTIO_FEATURES_U64S 1

static inline void virtio_get_features(struct virtio_device *vdev,
				       u64 *features)
{
	features[0] = vdev->config->get_features(vdev);
}

static inline bool virtio_features_test_bit(const u64 *features,
					    unsigned int bit)
{
	return bit < 64 && (features[0] & BIT_ULL(bit));
}
#endif

/*
 * 6.7: shrinkers are allocated by the core (shrinker_alloc(), with a
 * private_data pointer) instead of embedded in the caller and registered.
 * Older kernels get the same three calls on a wrapper that carries the
 * pointer; vbhp_shrinker_private() reads it on every kernel, since a field
 * cannot be filled in.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0)
struct vbhp_compat_shrinker {
	struct shrinker shrinker;
	void *private_data;
	char name[32];
};

static inline struct shrinker *vbhp_compat_shrinker_alloc(unsigned int flags,
							  const char *name)
{
	struct vbhp_compat_shrinker *w = kzalloc(sizeof(*w), GFP_KERNEL);

	if (!w)
		return NULL;
	w->shrinker.flags = flags;
	w->shrinker.seeks = DEFAULT_SEEKS;
	strscpy(w->name, name, sizeof(w->name));
	return &w->shrinker;
}

#define shrinker_alloc(flags, fmt, name) \
	vbhp_compat_shrinker_alloc(flags, name)

static inline void *vbhp_shrinker_private(struct shrinker *s)
{
	return container_of(s, struct vbhp_compat_shrinker,
			    shrinker)->private_data;
}

static inline void vbhp_shrinker_set_private(struct shrinker *s, void *priv)
{
	container_of(s, struct vbhp_compat_shrinker,
		     shrinker)->private_data = priv;
}

/* Registration can fail before 6.7: then there is simply no shrinker. */
static inline void shrinker_register(struct shrinker *s)
{
	struct vbhp_compat_shrinker *w =
		container_of(s, struct vbhp_compat_shrinker, shrinker);

	if (register_shrinker(s, "%s", w->name))
		pr_warn("%s: shrinker not registered: no deflate on reclaim\n",
			w->name);
}

/* unregister_shrinker() ignores a shrinker that never registered. */
static inline void shrinker_free(struct shrinker *s)
{
	if (!s)
		return;
	unregister_shrinker(s);
	kfree(container_of(s, struct vbhp_compat_shrinker, shrinker));
}
#else
static inline void *vbhp_shrinker_private(struct shrinker *s)
{
	return s->private_data;
}

static inline void vbhp_shrinker_set_private(struct shrinker *s, void *priv)
{
	s->private_data = priv;
}
#endif

/*
 * 6.4: mm_account_reclaimed_pages() counts pages a shrinker gave back to
 * the page allocator as reclaimed, so that direct reclaim stops once it has
 * enough.  Before, a shrinker added them to reclaim_state->reclaimed_slab.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 4, 0)
static inline void mm_account_reclaimed_pages(unsigned long pages)
{
	if (current->reclaim_state)
		current->reclaim_state->reclaimed_slab += pages;
}
#endif

/*
 * 6.10: six more statistics tags (uapi virtio_balloon.h, VIRTIO_BALLOON_S_NR
 * went from 10 to 16): OOM kills, allocation stalls, and the memory kswapd
 * and direct reclaim scanned and reclaimed.  Older kernels get the tag
 * numbers; vbhp_stats_tag_defined() says whether the running kernel's uapi
 * has a tag, so that the driver sends just those, as the kernel's own
 * driver does.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 10, 0)
#define VIRTIO_BALLOON_S_OOM_KILL	10
#define VIRTIO_BALLOON_S_ALLOC_STALL	11
#define VIRTIO_BALLOON_S_ASYNC_SCAN	12
#define VIRTIO_BALLOON_S_DIRECT_SCAN	13
#define VIRTIO_BALLOON_S_ASYNC_RECLAIM	14
#define VIRTIO_BALLOON_S_DIRECT_RECLAIM	15
#endif

static inline bool vbhp_stats_tag_defined(unsigned int tag)
{
	return tag < VIRTIO_BALLOON_S_NR;
}

/*
 * 7.1: the reclaim scan and steal counters (pgscan_kswapd, pgscan_direct,
 * pgsteal_kswapd, pgsteal_direct) moved from the vm events to the node
 * statistics, read with global_node_page_state().  Before, they were vm
 * events: vbhp_reclaim_pages() takes the events the caller summed with
 * all_vm_events() and reads the counter from there.  (Only 6.12 and 7.3 of
 * the kernels around the move are built.)
 */
#ifdef CONFIG_VM_EVENT_COUNTERS
#if LINUX_VERSION_CODE < KERNEL_VERSION(7, 1, 0)
static inline unsigned long vbhp_reclaim_pages(const unsigned long *ev,
					       enum vm_event_item item)
{
	return ev[item];
}
#else
static inline unsigned long vbhp_reclaim_pages(const unsigned long *ev,
					       enum node_stat_item item)
{
	return global_node_page_state(item);
}
#endif
#endif

/*
 * 7.0: balloon_compaction.h became balloon.h, CONFIG_BALLOON_COMPACTION
 * became CONFIG_BALLOON_MIGRATION, and the core took over what a driver's
 * migratepage() used to do after telling its host: put the new page on the
 * balloon list (with a reference), count BALLOON_MIGRATE, drop the isolated
 * count, and finalize and release the old page.  The list lock moved into
 * mm/ and drivers no longer see it.  The driver's callback ends with
 * vbhp_balloon_migrated(), which does that bookkeeping before 7.0 and
 * nothing after; the other calls (balloon_devinfo_init(),
 * balloon_page_enqueue(), balloon_page_dequeue() and the list variants)
 * kept their names.  (Only 6.12 and 7.3 of the kernels around the change
 * are built.)
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(7, 0, 0)
#include <linux/balloon_compaction.h>

#ifdef CONFIG_BALLOON_COMPACTION
/* Called with @newpage and @page locked, as the core migrates. */
static inline int vbhp_balloon_migrated(struct balloon_dev_info *b,
					struct page *newpage,
					struct page *page, int rc)
{
	unsigned long flags;

	if (rc)
		return rc;
	get_page(newpage);
	spin_lock_irqsave(&b->pages_lock, flags);
	balloon_page_insert(b, newpage);
	b->isolated_pages--;
	__count_vm_event(BALLOON_MIGRATE);
	spin_unlock_irqrestore(&b->pages_lock, flags);
	balloon_page_finalize(page);
	put_page(page);
	return MIGRATEPAGE_SUCCESS;
}

/* 7.0's name for the option, which the driver tests. */
#define CONFIG_BALLOON_MIGRATION 1
#endif
#else
#include <linux/balloon.h>

static inline int vbhp_balloon_migrated(struct balloon_dev_info *b,
					struct page *newpage,
					struct page *page, int rc)
{
	return rc;
}
#endif

#endif /* _VBHP_COMPAT_H */
