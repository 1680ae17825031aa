/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio_balloon_hp: wire protocol shared by the guest driver and hosts.
 * docs/protocol.md specifies it; this header only defines the numbers.
 *
 * Without VIRTIO_BALLOON_F_HP_BLOCKS the driver speaks the standard
 * virtio-balloon protocol (include/uapi/linux/virtio_balloon.h): every
 * block of 2^order pages goes out as 2^order consecutive 4 KiB frame
 * numbers (le32) on the inflate or deflate queue, at most
 * VIRTIO_BALLOON_HP_PFNS_PER_BUF of them per buffer.
 */
#ifndef _UAPI_LINUX_VIRTIO_BALLOON_HP_H
#define _UAPI_LINUX_VIRTIO_BALLOON_HP_H

#include <linux/types.h>

/* Frame numbers on the wire always count 4 KiB units. */
#define VIRTIO_BALLOON_HP_PFN_SHIFT	12

/*
 * Largest buffer: 256 le32 frame numbers (1 KiB).  cloud-hypervisor rejects
 * longer inflate/deflate descriptors, so no host may be sent more.
 */
#define VIRTIO_BALLOON_HP_PFNS_PER_BUF	256

/*
 * The device takes naturally aligned blocks of 2^hp_block_order 4 KiB
 * frames, one frame number per block, on two extra queues (hp_inflateq and
 * hp_deflateq) after the queues of every other negotiated feature.
 */
#define VIRTIO_BALLOON_F_HP_BLOCKS	20

/* The device configuration with VIRTIO_BALLOON_F_HP_BLOCKS. */
struct virtio_balloon_hp_config {
	__le32 num_pages;		/* target, 4 KiB pages (device) */
	__le32 actual;			/* in the balloon, 4 KiB pages (driver) */
	__le32 free_page_hint_cmd_id;	/* as virtio_balloon_config */
	__le32 poison_val;		/* as virtio_balloon_config */
	__le32 hp_block_order;		/* order of hp blocks (device, >= 1) */
};

#endif /* _UAPI_LINUX_VIRTIO_BALLOON_HP_H */
