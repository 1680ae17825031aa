/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vbhp_lib.h - what the virtio_balloon_hp selftests share: finding the
 * module and its device, reading its debugfs counters and /proc/meminfo,
 * the ioctl device's STATS and its checks, and the reasons a test does
 * not apply (each a KSFT_SKIP with a reason).
 * Header only, so that each program is one translation unit with one set
 * of TAP counters.
 */
#ifndef VBHP_LIB_H
#define VBHP_LIB_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/virtio_balloon_hp.h>

#include "vbhp_ksft.h"

#define VBHP_DEBUGFS	"/sys/kernel/debug/virtio_balloon_hp"
#define VBHP_PARAMS	"/sys/module/virtio_balloon_hp/parameters"
#define VBHP_DEV	"/dev/virtio_balloon_hp"
#define VBHP_DRIVER	"/sys/bus/virtio/drivers/virtio_balloon_hp"
#define VIRTIO_DEVICES	"/sys/bus/virtio/devices"
#define VBHP_BALLOON_ID	5	/* virtio device ID of a memory balloon */
#define VBHP_MAX_KEYS	256

/* What a test needs before it can say anything (vbhp_require()). */
#define VBHP_NEED_ROOT		0x1	/* euid 0 */
#define VBHP_NEED_DEVICE	0x2	/* module loaded and bound to a device */
#define VBHP_NEED_DEBUGFS	0x4	/* its debugfs file readable */

/* One read of the debugfs file: "name: value" lines. */
struct vbhp_dbg {
	int nr;
	struct {
		char name[64];
		long long val;
	} key[VBHP_MAX_KEYS];
};

static char vbhp_device_path[PATH_MAX];

static inline long long vbhp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static inline void vbhp_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* First line of @path without its newline; -1 if unreadable. */
static inline int vbhp_read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	int ok;

	if (!f)
		return -1;
	ok = !!fgets(buf, len, f);
	fclose(f);
	if (!ok)
		return -1;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

/* The first device bound to our driver, into vbhp_device_path; -1 if none. */
static inline int vbhp_find_device(void)
{
	DIR *d = opendir(VBHP_DRIVER);
	struct dirent *e;
	int found = -1;

	if (!d)
		return -1;
	while (found && (e = readdir(d)))
		if (!strncmp(e->d_name, "virtio", 6)) {
			snprintf(vbhp_device_path, sizeof(vbhp_device_path),
				 "%s/%s", VIRTIO_DEVICES, e->d_name);
			found = 0;
		}
	closedir(d);
	return found;
}

/* Driver of the first balloon device into @buf ("" if unbound); NULL if none. */
static inline const char *vbhp_balloon_driver(char *buf, size_t len)
{
	char path[PATH_MAX], link[PATH_MAX], id[32];
	DIR *d = opendir(VIRTIO_DEVICES);
	const char *res = NULL;
	struct dirent *e;
	ssize_t n;

	while (d && !res && (e = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s/device", VIRTIO_DEVICES, e->d_name);
		if (e->d_name[0] == '.' || vbhp_read_line(path, id, sizeof(id)) ||
		    strtol(id, NULL, 0) != VBHP_BALLOON_ID)
			continue;
		snprintf(path, sizeof(path), "%s/%s/driver", VIRTIO_DEVICES, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		snprintf(buf, len, "%s", strrchr(link, '/') ? strrchr(link, '/') + 1 : link);
		res = buf;
	}
	if (d)
		closedir(d);
	return res;
}

/*
 * Exit with KSFT_SKIP and the reason when any of @need is missing: not
 * root, module not loaded, no virtio-balloon device or one bound to
 * another driver, debugfs not mounted.  Call before ksft_set_plan().
 */
static inline void vbhp_require(unsigned int need)
{
	struct stat dbg, sys;
	char buf[PATH_MAX];
	const char *drv;

	if ((need & VBHP_NEED_ROOT) && geteuid())
		ksft_exit_skip("must run as root\n");
	if (!(need & (VBHP_NEED_DEVICE | VBHP_NEED_DEBUGFS)))
		return;
	if (stat("/sys/module/virtio_balloon_hp", &sys))
		ksft_exit_skip("virtio_balloon_hp is not loaded (modprobe virtio_balloon_hp)\n");
	if (vbhp_find_device()) {
		drv = vbhp_balloon_driver(buf, sizeof(buf));
		if (!drv)
			ksft_exit_skip("no virtio-balloon device in this machine\n");
		ksft_exit_skip("%s%s, not virtio_balloon_hp (blacklist virtio_balloon)\n",
			       "the virtio-balloon device is bound to ",
			       *drv ? drv : "no driver");
	}
	if (!(need & VBHP_NEED_DEBUGFS) || !access(VBHP_DEBUGFS, R_OK))
		return;
	if (stat("/sys/kernel/debug", &dbg) || stat("/sys/kernel", &sys) ||
	    dbg.st_dev == sys.st_dev)
		ksft_exit_skip("debugfs is not mounted (mount -t debugfs none %s)\n",
			       "/sys/kernel/debug");
	ksft_exit_skip("no " VBHP_DEBUGFS " (kernel without CONFIG_DEBUG_FS?)\n");
}

/* sysfs directory of the virtio device the module is bound to. */
static inline const char *vbhp_device_dir(void)
{
	if (!vbhp_device_path[0] && vbhp_find_device())
		ksft_exit_fail_msg("no device bound to virtio_balloon_hp\n");
	return vbhp_device_path;
}

/* A module parameter; a missing one fails the program. */
static inline long vbhp_param(const char *name)
{
	char path[PATH_MAX], buf[32];

	snprintf(path, sizeof(path), VBHP_PARAMS "/%s", name);
	if (vbhp_read_line(path, buf, sizeof(buf)))
		ksft_exit_fail_msg("cannot read %s: %s\n", path, strerror(errno));
	return strtol(buf, NULL, 10);
}

/* Read the debugfs file into @d; failing to is a failure. */
static inline void vbhp_dbg_read(struct vbhp_dbg *d)
{
	FILE *f = fopen(VBHP_DEBUGFS, "r");
	char line[128];

	if (!f)
		ksft_exit_fail_msg("cannot read " VBHP_DEBUGFS ": %s\n", strerror(errno));
	d->nr = 0;
	while (d->nr < VBHP_MAX_KEYS && fgets(line, sizeof(line), f))
		if (sscanf(line, "%63[^:]: %lld", d->key[d->nr].name,
			   &d->key[d->nr].val) == 2)
			d->nr++;
	fclose(f);
}

/* The value of @name in @d; a missing key fails the program. */
static inline long long vbhp_dbg(const struct vbhp_dbg *d, const char *name)
{
	int i;

	for (i = 0; i < d->nr; i++)
		if (!strcmp(d->key[i].name, name))
			return d->key[i].val;
	ksft_exit_fail_msg("debugfs has no \"%s\"\n", name);
	return -1;
}

/* The same for "@what_o@order". */
static inline long long vbhp_dbg_order(const struct vbhp_dbg *d,
				       const char *what, int order)
{
	char name[64];

	snprintf(name, sizeof(name), "%s_o%d", what, order);
	return vbhp_dbg(d, name);
}

/* The block order the driver must use: the host's hp order, else page_order. */
static inline int vbhp_expected_order(const struct vbhp_dbg *d)
{
	int hp = vbhp_dbg(d, "hp_order");

	return hp ? hp : vbhp_param("page_order");
}

/* 4 KiB pages held, summed over the orders (held_oN << N). */
static inline long long vbhp_dbg_held_pages(const struct vbhp_dbg *d)
{
	int o, max = vbhp_dbg(d, "page_order");
	long long held = 0;

	for (o = 0; o <= max; o++)
		held += vbhp_dbg_order(d, "held", o) << o;
	return held;
}

static inline int vbhp_dbg_idle(const struct vbhp_dbg *d)
{
	return !vbhp_dbg(d, "inflate_inflight") && !vbhp_dbg(d, "deflate_inflight") &&
	       !vbhp_dbg(d, "hp_inflate_inflight") && !vbhp_dbg(d, "hp_deflate_inflight");
}

/*
 * Read the debugfs file until nothing is in flight and two reads 100 ms
 * apart agree on target, current and the blocks held: 0, or -1 when that
 * did not happen within @timeout_ms (then @d holds the last read).
 */
static inline int vbhp_dbg_stable(struct vbhp_dbg *d, long timeout_ms)
{
	long long deadline = vbhp_now_ms() + timeout_ms;
	struct vbhp_dbg *prev = malloc(sizeof(*prev));
	int ret = -1;

	if (!prev)
		ksft_exit_fail_msg("out of memory\n");
	vbhp_dbg_read(prev);
	while (vbhp_now_ms() < deadline) {
		vbhp_sleep_ms(100);
		vbhp_dbg_read(d);
		if (vbhp_dbg_idle(prev) && vbhp_dbg_idle(d) &&
		    vbhp_dbg(prev, "target") == vbhp_dbg(d, "target") &&
		    vbhp_dbg(prev, "current") == vbhp_dbg(d, "current") &&
		    vbhp_dbg_held_pages(prev) == vbhp_dbg_held_pages(d)) {
			ret = 0;
			break;
		}
		*prev = *d;
	}
	free(prev);
	return ret;
}

/* A /proc/meminfo field in kB, -1 if absent. */
static inline long vbhp_meminfo_kb(const char *field)
{
	FILE *f = fopen("/proc/meminfo", "r");
	size_t n = strlen(field);
	char line[128];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':')
			kb = atol(line + n + 1);
	fclose(f);
	return kb;
}

/* VIRTIO_BALLOON_HP_IOC_STATS on @fd into @s; the program fails if it does. */
static inline void vbhp_get_stats(int fd, struct virtio_balloon_hp_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	if (ioctl(fd, VIRTIO_BALLOON_HP_IOC_STATS, s))
		ksft_exit_fail_msg("STATS failed: %s\n", strerror(errno));
}

/* Nothing that a refused call could have moved has moved from @a to @b. */
static inline int vbhp_stats_unchanged(const struct virtio_balloon_hp_stats *a,
				       const struct virtio_balloon_hp_stats *b)
{
	return a->current_bytes == b->current_bytes &&
	       !memcmp(a->od_events, b->od_events, sizeof(a->od_events)) &&
	       !memcmp(a->od_bytes, b->od_bytes, sizeof(a->od_bytes)) &&
	       a->od_below_4g_bytes == b->od_below_4g_bytes &&
	       a->hold == b->hold;
}

/* The held blocks add up to current and every field is in its range. */
static inline int vbhp_stats_consistent(const struct virtio_balloon_hp_stats *s)
{
	unsigned long long held = 0, od = 0;
	int o, t;

	for (o = 0; o < VIRTIO_BALLOON_HP_ORDERS; o++) {
		if (s->held_blocks[o] && o > (int)s->block_order)
			return 0;
		held += s->held_blocks[o] << (o + VIRTIO_BALLOON_HP_PFN_SHIFT);
	}
	for (t = 0; t < VIRTIO_BALLOON_HP_OD_NUM; t++)
		od += s->od_bytes[t];
	return held == s->current_bytes && s->od_below_4g_bytes <= od &&
	       s->block_order < VIRTIO_BALLOON_HP_ORDERS &&
	       s->deflate_on_oom <= 1 && s->hold <= 1 &&
	       s->init_on_alloc <= 1 && s->init_on_free <= 1;
}

#endif /* VBHP_LIB_H */
