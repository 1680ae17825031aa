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

#endif /* _VBHP_COMPAT_H */
