// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_ioctl_fuzz - random calls on /dev/virtio_balloon_hp (docs/ioctl.md).
 * Each call takes a random command number (ours, with random direction and
 * size bits, or another type or number), and a random argument: a valid
 * struct with some fields or bytes changed, random bytes, or a pointer
 * into memory the caller cannot read or write.  After each call:
 *  - the result is 0 or an errno docs/ioctl.md lists;
 *  - a refused call changed nothing (current, on-demand counts, hold);
 *  - a DEFLATE that succeeded gave back at least what it asked for;
 *  - every 500 calls, and at the end, STATS is self-consistent.
 * DEFLATEs ask for at most 4 MiB each, and for nothing once 64 MiB came
 * back in all.
 *
 * Usage: vbhp_ioctl_fuzz [-n CALLS] [-s SEED]   (defaults 20000, the time)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/virtio_balloon_hp.h>

#include "vbhp_lib.h"

#define PAGE		4096UL
#define MAX_ARG_SIZE	4096		/* largest size the module takes */
#define DEFLATE_MAX	(4ULL << 20)	/* per valid DEFLATE */
#define DEFLATE_BUDGET	(64ULL << 20)	/* all valid DEFLATEs together */
#define IOC_DEFLATE	VIRTIO_BALLOON_HP_IOC_DEFLATE
#define IOC_STATS	VIRTIO_BALLOON_HP_IOC_STATS

static int dev_fd;
static __u64 budget = DEFLATE_BUDGET;
static unsigned char *arena;	/* arg page, then a PROT_NONE page */
static unsigned char *rdonly;	/* a read-only page of zeroes */

/* Counts by outcome, printed at the end. */
static unsigned long n_ok, n_deflated, n_refused, n_efault;

static __u64 rnd(__u64 n)
{
	__u64 r = ((__u64)random() << 31) ^ (__u64)random();

	return n ? r % n : r;
}

/* A command number: ours (any direction and size bits) or not ours. */
static unsigned long pick_cmd(int *ours)
{
	unsigned int nr = rnd(4) ? (rnd(2) ? _IOC_NR(IOC_DEFLATE) : _IOC_NR(IOC_STATS))
				 : rnd(256);
	unsigned int type = rnd(8) ? VIRTIO_BALLOON_HP_IOC_MAGIC : rnd(256);
	unsigned int dir = rnd(2) ? _IOC_READ | _IOC_WRITE : rnd(4);
	unsigned int size = rnd(2) ? sizeof(struct virtio_balloon_hp_stats) : rnd(1 << 14);

	*ours = type == VIRTIO_BALLOON_HP_IOC_MAGIC &&
		(nr == _IOC_NR(IOC_DEFLATE) || nr == _IOC_NR(IOC_STATS));
	return _IOC(dir, type, nr, size);
}

/*
 * An argument for @cmd at the end of the arena's first page, so that a
 * size past it runs into the PROT_NONE page; or a pointer the caller
 * cannot use.  *@asked: the bytes a DEFLATE asks for (0: none).
 */
static void *pick_arg(unsigned long cmd, __u64 *asked)
{
	int deflate = _IOC_NR(cmd) == _IOC_NR(IOC_DEFLATE);
	size_t len = deflate ? sizeof(struct virtio_balloon_hp_deflate)
			     : sizeof(struct virtio_balloon_hp_stats);
	unsigned char *p = arena + PAGE - len - 8 * rnd(4);
	struct virtio_balloon_hp_deflate *d = (void *)p;
	unsigned int i;

	*asked = 0;
	switch (rnd(8)) {
	case 0:
		return NULL;
	case 1:
		return arena + PAGE;		/* no access */
	case 2:
		return rdonly;			/* zeroes, not writable */
	case 3:
		for (i = 0; i < len; i++)
			p[i] = rnd(256);
		break;
	default:				/* valid, then changed */
		memset(p, 0, len);
		*(__u32 *)p = len;
		if (deflate)
			d->bytes = 1 + rnd(DEFLATE_MAX);
		for (i = rnd(3); i; i--) {
			if (rnd(2))
				*(__u32 *)(p + 4 * rnd(len / 4)) = rnd(0);
			else
				p[rnd(len)] ^= 1 << rnd(8);
		}
	}
	if (deflate) {
		if (d->bytes > budget)
			d->bytes = 0;		/* past the budget: refused */
		*asked = d->bytes;
	}
	return p;
}

static int errno_listed(int err, int ours)
{
	if (!ours)
		return err == ENOTTY;
	return err == EINVAL || err == EFAULT || err == ENOSPC ||
	       err == EOPNOTSUPP || err == EAGAIN;
}

/* One random call; 0 if it broke a rule (said why). */
static int one_call(unsigned long i)
{
	struct virtio_balloon_hp_stats before, after;
	struct virtio_balloon_hp_deflate *d;
	unsigned long cmd;
	int ours, err;
	__u64 asked;

	cmd = pick_cmd(&ours);
	d = pick_arg(cmd, &asked);

	vbhp_get_stats(dev_fd, &before);
	err = ioctl(dev_fd, cmd, d) ? errno : 0;
	vbhp_get_stats(dev_fd, &after);
	if (err && !errno_listed(err, ours)) {
		ksft_print_msg("call %lu cmd %#lx: unlisted errno %s\n", i, cmd, strerror(err));
		return 0;
	}
	if (err) {
		n_refused++;
		n_efault += err == EFAULT;
		if (!vbhp_stats_unchanged(&before, &after)) {
			ksft_print_msg("call %lu cmd %#lx refused (%s) but the balloon changed\n",
				       i, cmd, strerror(err));
			return 0;
		}
		return 1;
	}
	n_ok++;
	if (_IOC_NR(cmd) == _IOC_NR(IOC_DEFLATE) && after.current_bytes != before.current_bytes) {
		__u64 got = before.current_bytes - after.current_bytes;

		if (!asked || got < asked || d->deflated != got) {
			ksft_print_msg("call %lu: DEFLATE asked %llu, gave %llu, said %llu\n", i,
				       (unsigned long long)asked, (unsigned long long)got,
				       (unsigned long long)d->deflated);
			return 0;
		}
		budget -= got < budget ? got : budget;
		n_deflated++;
	}
	return 1;
}

int main(int argc, char **argv)
{
	unsigned long calls = 20000, i, bad = 0;
	struct virtio_balloon_hp_stats s;
	unsigned int seed = time(NULL);
	int opt;

	while ((opt = getopt(argc, argv, "n:s:")) != -1) {
		if (opt == 'n')
			calls = strtoul(optarg, NULL, 0);
		else if (opt == 's')
			seed = strtoul(optarg, NULL, 0);
		else
			ksft_exit_fail_msg("usage: %s [-n CALLS] [-s SEED]\n", argv[0]);
	}
	ksft_print_header();
	vbhp_require(VBHP_NEED_ROOT | VBHP_NEED_DEVICE);
	ksft_set_plan(2);
	dev_fd = open(VBHP_DEV, O_RDWR | O_CLOEXEC);
	arena = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dev_fd < 0 || arena == MAP_FAILED)
		ksft_exit_fail_msg("open " VBHP_DEV " or mmap: %s\n", strerror(errno));
	rdonly = arena + 2 * PAGE;
	if (mprotect(arena + PAGE, PAGE, PROT_NONE) || mprotect(rdonly, PAGE, PROT_READ))
		ksft_exit_fail_msg("mprotect: %s\n", strerror(errno));
	srandom(seed);
	ksft_print_msg("seed %u (-s %u repeats it), %lu calls\n", seed, seed, calls);

	for (i = 0; i < calls && bad < 5; i++) {
		bad += !one_call(i);
		if (i % 500 == 499) {
			vbhp_get_stats(dev_fd, &s);
			bad += !vbhp_stats_consistent(&s);
		}
	}
	ksft_print_msg("%lu succeeded (%lu deflates), %lu refused (%lu EFAULT)\n",
		       n_ok, n_deflated, n_refused, n_efault);
	ksft_test_result(!bad, "%lu random calls: every result listed, refusals change nothing\n",
			 i);
	vbhp_get_stats(dev_fd, &s);
	ksft_test_result(vbhp_stats_consistent(&s), "STATS consistent after them: %llu MiB held\n",
			 (unsigned long long)s.current_bytes >> 20);
	close(dev_fd);
	ksft_finished();
}
