/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio_balloon_hp: the interfaces the module shares with others.
 *  - the wire protocol with hosts: feature bit, config layout, frame units
 *    (docs/protocol.md specifies it; this header defines the numbers);
 *  - the ioctl ABI of /dev/virtio_balloon_hp with user space
 *    (docs/ioctl.md).
 *
 * Without VIRTIO_BALLOON_F_HP_BLOCKS the driver speaks the standard
 * virtio-balloon protocol (include/uapi/linux/virtio_balloon.h): every
 * block of 2^order pages goes out as 2^order consecutive 4 KiB frame
 * numbers (le32) on the inflate or deflate queue, at most
 * VIRTIO_BALLOON_HP_PFNS_PER_BUF of them per descriptor (a buffer chains
 * descriptors to hold whole blocks, unless the module parameter
 * whole_blocks is 0).
 */
#ifndef _UAPI_LINUX_VIRTIO_BALLOON_HP_H
#define _UAPI_LINUX_VIRTIO_BALLOON_HP_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Frame numbers on the wire always count 4 KiB units. */
#define VIRTIO_BALLOON_HP_PFN_SHIFT	12

/*
 * Largest descriptor: 256 le32 frame numbers (1 KiB).  cloud-hypervisor
 * rejects longer inflate/deflate descriptors, so no host may be sent more
 * in one; it also reads only a buffer's first descriptor.
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

/*
 * The user-space ABI of /dev/virtio_balloon_hp (docs/ioctl.md).
 *
 * Every argument struct starts with its size: the caller sets it to the
 * sizeof() it was built with.  Sizes below the first version's
 * (VIRTIO_BALLOON_HP_*_SIZE_VER0) or above 4096 are refused with -EINVAL;
 * a caller built against a larger, later version must leave the fields
 * this kernel module does not know at zero, and a caller built against an
 * older, smaller version gets the fields it knows.  The module writes back
 * at most the caller's size, and in @size how much it filled in: its own
 * struct's size, or the caller's if that is smaller.  Commands are matched
 * on type and number only, so a grown struct keeps its command.  All
 * commands need CAP_SYS_ADMIN.
 */
#define VIRTIO_BALLOON_HP_IOC_MAGIC	0xB8

/* Only deflate blocks that lie wholly below 4 GiB (32-bit DMA). */
#define VIRTIO_BALLOON_HP_DEFLATE_BELOW_4G	0x00000001U
#define VIRTIO_BALLOON_HP_DEFLATE_FLAGS	VIRTIO_BALLOON_HP_DEFLATE_BELOW_4G

/**
 * struct virtio_balloon_hp_deflate - take memory back from the host now.
 * @size: in: sizeof(struct virtio_balloon_hp_deflate).
 * @flags: in: VIRTIO_BALLOON_HP_DEFLATE_*; unknown bits are refused.
 * @bytes: in: deflate at least this much; whole blocks are deflated, so
 *	up to one block more.  0, or more than the guest's RAM, is refused;
 *	more than the balloon holds (below 4 GiB with the flag) fails with
 *	-ENOSPC and deflates nothing.
 * @deflated: out: bytes given back.  The ioctl returns only after the host
 *	acknowledged every block (and, for a VFIO host, mapped it).
 *
 * Needs VIRTIO_BALLOON_F_DEFLATE_ON_OOM (-EOPNOTSUPP without it).  Like
 * every on-demand deflate it may go below the host's target, and the
 * balloon does not inflate again until the host writes a target.
 */
struct virtio_balloon_hp_deflate {
	__u32 size;
	__u32 flags;
	__u64 bytes;
	__u64 deflated;
};

/* sizeof(struct virtio_balloon_hp_deflate) of its first version. */
#define VIRTIO_BALLOON_HP_DEFLATE_SIZE_VER0	24

/* Triggers of an on-demand deflate, as indexes of the od_* arrays. */
#define VIRTIO_BALLOON_HP_OD_SHRINKER	0
#define VIRTIO_BALLOON_HP_OD_OOM	1
#define VIRTIO_BALLOON_HP_OD_IOCTL	2
#define VIRTIO_BALLOON_HP_OD_NUM	4	/* one spare */

#define VIRTIO_BALLOON_HP_ORDERS	16

/**
 * struct virtio_balloon_hp_stats - what the balloon holds and has done.
 * @size: in: sizeof(struct virtio_balloon_hp_stats).
 * @block_order: out: the largest block order in use.
 * @target_bytes: out: the host's target.
 * @current_bytes: out: in the balloon now, acknowledged by the host.
 * @held_blocks: out: blocks held, by order.
 * @od_events: out: on-demand deflates, by trigger (VIRTIO_BALLOON_HP_OD_*).
 * @od_bytes: out: bytes deflated on demand, by trigger.
 * @od_below_4g_bytes: out: of those, bytes that lay below 4 GiB.
 * @deflate_on_oom: out: 1 if VIRTIO_BALLOON_F_DEFLATE_ON_OOM is negotiated.
 * @hold: out: 1 while inflation waits for the host to write a target after
 *	an on-demand deflate.
 * @init_on_alloc: out: 1 if the guest kernel zeroes every page it
 *	allocates (want_init_on_alloc(), the init_on_alloc= boot option;
 *	default on in Debian's kernels), read when the device was probed.
 *	Then every block the balloon takes is written in full before the
 *	host discards it (unless @init_on_free is 1 too: the kernel then
 *	zeroes at free instead).  Since VIRTIO_BALLOON_HP_STATS_SIZE_VER1.
 * @init_on_free: out: 1 if the guest kernel zeroes every page it frees
 *	(want_init_on_free(), the init_on_free= boot option), read when the
 *	device was probed.  Then every block deflated is written in full as
 *	it returns to the guest.  Since VIRTIO_BALLOON_HP_STATS_SIZE_VER1.
 */
struct virtio_balloon_hp_stats {
	__u32 size;
	__u32 block_order;
	__u64 target_bytes;
	__u64 current_bytes;
	__u64 held_blocks[VIRTIO_BALLOON_HP_ORDERS];
	__u64 od_events[VIRTIO_BALLOON_HP_OD_NUM];
	__u64 od_bytes[VIRTIO_BALLOON_HP_OD_NUM];
	__u64 od_below_4g_bytes;
	__u32 deflate_on_oom;
	__u32 hold;
	__u32 init_on_alloc;
	__u32 init_on_free;
};

/* sizeof(struct virtio_balloon_hp_stats), by version. */
#define VIRTIO_BALLOON_HP_STATS_SIZE_VER0	232	/* up to @hold */
#define VIRTIO_BALLOON_HP_STATS_SIZE_VER1	240	/* + init_on_alloc/free */

#define VIRTIO_BALLOON_HP_IOC_DEFLATE \
	_IOWR(VIRTIO_BALLOON_HP_IOC_MAGIC, 1, struct virtio_balloon_hp_deflate)
#define VIRTIO_BALLOON_HP_IOC_STATS \
	_IOWR(VIRTIO_BALLOON_HP_IOC_MAGIC, 2, struct virtio_balloon_hp_stats)

#endif /* _UAPI_LINUX_VIRTIO_BALLOON_HP_H */
