/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every kernel-version difference virtio_balloon_hp depends on.
 *
 * No other file of the module tests LINUX_VERSION_CODE or kernel-version
 * dependent macros; they call the helpers defined here instead.  Supported:
 * Debian bookworm 6.1 and bookworm-backports 6.12 (and what lies between).
 */
#ifndef _VBHP_COMPAT_H
#define _VBHP_COMPAT_H

#include <linux/version.h>
#include <linux/mmzone.h>
#include <linux/sched.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/swap.h>
#include <linux/virtio_config.h>

/*
 * The largest order the buddy allocator hands out.  Before 6.4 MAX_ORDER
 * was exclusive; 6.4 made it inclusive and 6.8 renamed it MAX_PAGE_ORDER.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
#define VBHP_MAX_ORDER MAX_PAGE_ORDER
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
#define VBHP_MAX_ORDER MAX_ORDER
#else
#define VBHP_MAX_ORDER (MAX_ORDER - 1)
#endif

/*
 * 6.11 replaced the parallel callbacks[]/names[] arrays of
 * virtio_find_vqs() with one array of struct virtqueue_info.
 */
static inline int vbhp_compat_find_vqs(struct virtio_device *vdev,
				       unsigned int nvqs,
				       struct virtqueue *vqs[],
				       vq_callback_t *callbacks[],
				       const char * const names[])
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	struct virtqueue_info info[8] = {};
	unsigned int i;

	if (WARN_ON(nvqs > ARRAY_SIZE(info)))
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		info[i].name = names[i];
		info[i].callback = callbacks[i];
	}
	return virtio_find_vqs(vdev, nvqs, vqs, info, NULL);
#else
	return virtio_find_vqs(vdev, nvqs, vqs, callbacks, names, NULL);
#endif
}

/*
 * 6.7 made shrinkers dynamically allocated (shrinker_alloc(), with a
 * private_data pointer); before, the caller embedded and registered one.
 * Both are hidden behind create/priv/destroy.
 */
typedef unsigned long (*vbhp_compat_shrink_fn)(struct shrinker *,
					       struct shrink_control *);

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
static inline struct shrinker *
vbhp_compat_shrinker_create(vbhp_compat_shrink_fn count,
			    vbhp_compat_shrink_fn scan, void *priv,
			    const char *name)
{
	struct shrinker *s = shrinker_alloc(0, "%s", name);

	if (!s)
		return NULL;
	s->count_objects = count;
	s->scan_objects = scan;
	s->seeks = DEFAULT_SEEKS;
	s->private_data = priv;
	shrinker_register(s);
	return s;
}

static inline void *vbhp_compat_shrinker_priv(struct shrinker *s)
{
	return s->private_data;
}

static inline void vbhp_compat_shrinker_destroy(struct shrinker *s)
{
	shrinker_free(s);
}
#else
struct vbhp_compat_shrinker {
	struct shrinker shrinker;
	void *priv;
};

static inline struct shrinker *
vbhp_compat_shrinker_create(vbhp_compat_shrink_fn count,
			    vbhp_compat_shrink_fn scan, void *priv,
			    const char *name)
{
	struct vbhp_compat_shrinker *w = kzalloc(sizeof(*w), GFP_KERNEL);

	if (!w)
		return NULL;
	w->shrinker.count_objects = count;
	w->shrinker.scan_objects = scan;
	w->shrinker.seeks = DEFAULT_SEEKS;
	w->priv = priv;
	if (register_shrinker(&w->shrinker, "%s", name)) {
		kfree(w);
		return NULL;
	}
	return &w->shrinker;
}

static inline void *vbhp_compat_shrinker_priv(struct shrinker *s)
{
	return container_of(s, struct vbhp_compat_shrinker, shrinker)->priv;
}

static inline void vbhp_compat_shrinker_destroy(struct shrinker *s)
{
	unregister_shrinker(s);
	kfree(container_of(s, struct vbhp_compat_shrinker, shrinker));
}
#endif

/*
 * Count pages a shrinker gave back to the page allocator as reclaimed, so
 * that direct reclaim stops once it has enough instead of going on down to
 * priority 0.  6.4 added mm_account_reclaimed_pages() for this; before, the
 * field was the slab-only reclaimed_slab.
 */
static inline void vbhp_compat_account_reclaimed(unsigned long pages)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	mm_account_reclaimed_pages(pages);
#else
	if (current->reclaim_state)
		current->reclaim_state->reclaimed_slab += pages;
#endif
}

#endif /* _VBHP_COMPAT_H */
