/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio_balloon_hp: wire protocol shared by the guest driver and hosts.
 *
 * Without any of the features defined here the driver speaks the standard
 * virtio-balloon protocol (see include/uapi/linux/virtio_balloon.h): every
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

#endif /* _UAPI_LINUX_VIRTIO_BALLOON_HP_H */
