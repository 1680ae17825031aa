// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_ioctl - the /dev/virtio_balloon_hp ABI (docs/ioctl.md): STATS is
 * consistent and serves callers built against its first version, its
 * init_on_alloc/init_on_free agree with debugfs and /proc/cmdline, every
 * malformed or unprivileged call is refused with the documented errno and
 * changes nothing, and an on-demand DEFLATE gives back whole blocks and is
 * accounted as an ioctl trigger.
 *
 * Usage: vbhp_ioctl [-r MIB] [-l]
 *   -r MIB  size of the valid deflate to try (default 64)
 *   -l      also deflate MIB below 4 GiB (VIRTIO_BALLOON_HP_DEFLATE_BELOW_4G)
 *
 * Without DEFLATE_ON_OOM the valid deflate must fail with EOPNOTSUPP; with
 * it, each successful deflate prints "# deflate N MiB took X ms".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/virtio_balloon_hp.h>

#include "vbhp_lib.h"

#define DEV_PATH	VBHP_DEV
#define MAX_ARG_SIZE	4096		/* largest size the module takes */
#define NOBODY		65534
#define NR_TESTS	27
#define OD_IOCTL	VIRTIO_BALLOON_HP_OD_IOCTL
#define IOC_DEFLATE	VIRTIO_BALLOON_HP_IOC_DEFLATE
#define IOC_STATS	VIRTIO_BALLOON_HP_IOC_STATS
#define BELOW_4G	VIRTIO_BALLOON_HP_DEFLATE_BELOW_4G

static int dev_fd;
static unsigned long long reserve = 64ULL << 20;	/* -r, in bytes */

/* The argument of every call; larger than any size the module may read. */
static union {
	struct virtio_balloon_hp_deflate d;
	struct virtio_balloon_hp_stats s;
	unsigned char raw[2 * MAX_ARG_SIZE];
} arg;

static const char *ename(int err)
{
	const char *name = err ? strerrorname_np(err) : "success";

	return name ? name : "unknown errno";
}

/* ioctl() on the device: 0, or the errno it failed with. */
static int do_ioctl(int fd, unsigned long cmd, void *p)
{
	return ioctl(fd, cmd, p) ? errno : 0;
}

/* A valid STATS argument in @arg. */
static void stats_arg(void)
{
	memset(&arg, 0, sizeof(arg));
	arg.s.size = sizeof(arg.s);
}

/* A deflate request in @arg that only @bytes and @flags could make invalid. */
static void deflate_arg(unsigned long long bytes, __u32 flags)
{
	memset(&arg, 0, sizeof(arg));
	arg.d.size = sizeof(arg.d);
	arg.d.flags = flags;
	arg.d.bytes = bytes;
}

static void valid_arg(unsigned long cmd)
{
	if (cmd == IOC_DEFLATE)
		deflate_arg(reserve, 0);
	else
		stats_arg();
}

/* @cmd on the prepared @arg fails with @want and changes nothing. */
static void expect_refused(const char *what, unsigned long cmd, int want)
{
	struct virtio_balloon_hp_stats before, after;
	int err, same;

	vbhp_get_stats(dev_fd, &before);
	err = do_ioctl(dev_fd, cmd, &arg);
	vbhp_get_stats(dev_fd, &after);
	same = vbhp_stats_unchanged(&before, &after);
	ksft_test_result(err == want && same, "%s: %s (want %s), stats %s\n",
			 what, ename(err), ename(want),
			 same ? "unchanged" : "CHANGED");
}

/* STATS works, writes back its own size, and is self-consistent. */
static void test_stats(void)
{
	struct virtio_balloon_hp_stats *s = &arg.s;
	int err;

	stats_arg();
	err = do_ioctl(dev_fd, IOC_STATS, s);
	if (err)
		ksft_exit_fail_msg("STATS failed: %s\n", ename(err));
	ksft_print_msg("target %llu MiB, current %llu MiB, order %u, deflate_on_oom %u, hold %u\n",
		       s->target_bytes >> 20, s->current_bytes >> 20,
		       s->block_order, s->deflate_on_oom, s->hold);
	ksft_print_msg("init_on_alloc %u, init_on_free %u\n",
		       s->init_on_alloc, s->init_on_free);
	ksft_test_result(s->size == sizeof(*s) && vbhp_stats_consistent(s),
			 "STATS: size %u, held blocks add up to current %llu bytes\n",
			 s->size, s->current_bytes);
}

/* A caller built against a larger struct is served when its tail is zero. */
static void test_stats_grown(void)
{
	size_t ksize = sizeof(arg.s), i;
	int err, tail_zero = 1;

	stats_arg();
	arg.s.size = ksize + 64;
	err = do_ioctl(dev_fd, IOC_STATS, &arg);
	for (i = ksize; i < ksize + 64; i++)
		tail_zero &= !arg.raw[i];
	ksft_test_result(!err && arg.s.size == ksize && tail_zero &&
			 vbhp_stats_consistent(&arg.s),
			 "STATS size %zu, zero tail: %s, size written back %u\n",
			 ksize + 64, ename(err), arg.s.size);
}

/*
 * A caller built against the first version of the struct is served: the
 * fields it knows are filled in, nothing past its size is written, and
 * the size written back is its own.
 */
static void test_stats_ver0(void)
{
	struct virtio_balloon_hp_stats now;
	size_t v0 = VIRTIO_BALLOON_HP_STATS_SIZE_VER0, i;
	int err, untouched = 1;

	vbhp_get_stats(dev_fd, &now);
	memset(&arg, 0xa5, sizeof(arg));
	memset(&arg, 0, v0);
	arg.s.size = v0;
	err = do_ioctl(dev_fd, IOC_STATS, &arg);
	for (i = v0; i < sizeof(arg.s) + 64; i++)
		untouched &= arg.raw[i] == 0xa5;
	ksft_test_result(!err && arg.s.size == v0 && untouched &&
			 arg.s.block_order == now.block_order &&
			 arg.s.deflate_on_oom == now.deflate_on_oom,
			 "STATS size %zu (first version): %s, size written back %u, bytes past it %s\n",
			 v0, ename(err), arg.s.size,
			 untouched ? "untouched" : "WRITTEN");
}

/* A boolean as kstrtobool() reads it: 0 or 1, -1 if it is not one. */
static int parse_bool(const char *v)
{
	if (v[0] && strchr("yY1", v[0]))
		return 1;
	if (v[0] && strchr("nN0", v[0]))
		return 0;
	if ((v[0] | 0x20) == 'o' && (v[1] | 0x20) == 'n')
		return 1;
	if ((v[0] | 0x20) == 'o' && (v[1] | 0x20) == 'f')
		return 0;
	return -1;
}

/*
 * The last valid "@name=" on /proc/cmdline, as the kernel reads it: 0 or
 * 1, -1 when absent (then the kernel's build default applies).
 */
static int cmdline_bool(const char *name)
{
	char line[4096], *p;
	size_t n = strlen(name);
	int val = -1, v;

	if (vbhp_read_line("/proc/cmdline", line, sizeof(line)))
		ksft_exit_fail_msg("cannot read /proc/cmdline: %s\n", strerror(errno));
	for (p = strtok(line, " "); p; p = strtok(NULL, " ")) {
		if (strncmp(p, name, n) || p[n] != '=')
			continue;
		v = parse_bool(p + n + 1);
		if (v >= 0)
			val = v;
	}
	return val;
}

/*
 * STATS' @name (@val) agrees with debugfs and, when the guest was booted
 * with "@name=", with the command line.  page_poison= overrides both
 * options at boot, so the command line says nothing then.
 */
static void check_zeroing(const struct vbhp_dbg *d, const char *name,
			  unsigned int val)
{
	int cmd = cmdline_bool(name), dbg = d ? vbhp_dbg(d, name) : -1;

	if (cmdline_bool("page_poison") > 0)
		cmd = -1;
	if (cmd < 0 && dbg < 0) {
		ksft_test_result_skip("STATS %s %u: no debugfs and no %s= on /proc/cmdline\n",
				      name, val, name);
		return;
	}
	ksft_test_result((cmd < 0 || (unsigned int)cmd == val) &&
			 (dbg < 0 || (unsigned int)dbg == val),
			 "STATS %s %u: debugfs %d, /proc/cmdline %d (-1: not there)\n",
			 name, val, dbg, cmd);
}

static void test_zeroing(void)
{
	struct virtio_balloon_hp_stats s;
	struct vbhp_dbg *d = NULL;

	vbhp_get_stats(dev_fd, &s);
	if (!access(VBHP_DEBUGFS, R_OK)) {
		d = malloc(sizeof(*d));
		if (!d)
			ksft_exit_fail_msg("out of memory\n");
		vbhp_dbg_read(d);
	}
	check_zeroing(d, "init_on_alloc", s.init_on_alloc);
	check_zeroing(d, "init_on_free", s.init_on_free);
	free(d);
}

/* Commands are matched on type and number: anything else is not ours. */
static void test_enotty(void)
{
	stats_arg();
	expect_refused("unknown command number 3",
		       _IOWR(VIRTIO_BALLOON_HP_IOC_MAGIC, 3,
			     struct virtio_balloon_hp_stats), ENOTTY);
	stats_arg();
	expect_refused("STATS with magic 0xB9",
		       _IOWR(VIRTIO_BALLOON_HP_IOC_MAGIC + 1, _IOC_NR(IOC_STATS),
			     struct virtio_balloon_hp_stats), ENOTTY);
}

/* Sizes outside [sizeof(v1), 4096] and nonzero unknown bytes are refused. */
static void test_sizes(unsigned long cmd, const char *name, size_t ksize)
{
	static const unsigned int bad[] = { 0, 4, MAX_ARG_SIZE + 1 };
	char what[96];
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		valid_arg(cmd);
		arg.s.size = bad[i];
		snprintf(what, sizeof(what), "%s size %u", name, bad[i]);
		expect_refused(what, cmd, EINVAL);
	}
	valid_arg(cmd);
	arg.s.size = ksize + 8;
	arg.raw[ksize + 7] = 1;
	snprintf(what, sizeof(what), "%s size %zu, byte %zu nonzero", name,
		 ksize + 8, ksize + 7);
	expect_refused(what, cmd, EINVAL);
}

/* Unknown flags, no bytes, more than any guest has, or output set: EINVAL. */
static void test_bad_fields(void)
{
	__u32 unknown = ~VIRTIO_BALLOON_HP_DEFLATE_FLAGS;

	deflate_arg(reserve, unknown & -unknown);
	expect_refused("DEFLATE lowest unknown flag", IOC_DEFLATE, EINVAL);
	deflate_arg(reserve, 0x80000000U);
	expect_refused("DEFLATE flag 0x80000000", IOC_DEFLATE, EINVAL);
	deflate_arg(0, 0);
	expect_refused("DEFLATE 0 bytes", IOC_DEFLATE, EINVAL);
	deflate_arg(1ULL << 62, 0);
	expect_refused("DEFLATE 1 << 62 bytes", IOC_DEFLATE, EINVAL);
	deflate_arg(reserve, 0);
	arg.d.deflated = 1;
	expect_refused("DEFLATE with deflated != 0 on input", IOC_DEFLATE,
		       EINVAL);
}

/* More than the balloon holds, but less than RAM: ENOSPC, nothing deflated. */
static void test_enospc(__u32 flags, const char *where)
{
	struct virtio_balloon_hp_stats s;
	unsigned long long ram, want;
	struct sysinfo si;
	char what[96];

	vbhp_get_stats(dev_fd, &s);
	if (sysinfo(&si))
		ksft_exit_fail_msg("sysinfo: %s\n", strerror(errno));
	ram = (unsigned long long)si.totalram * si.mem_unit;
	want = s.current_bytes + (4ULL << (s.block_order + 12));
	if (!s.deflate_on_oom) {
		ksft_test_result_skip("ENOSPC%s: no deflate-on-oom\n", where);
		return;
	}
	if (want >= ram) {
		ksft_test_result_skip("ENOSPC%s: balloon %llu MiB too near RAM %llu MiB\n",
				      where, s.current_bytes >> 20, ram >> 20);
		return;
	}
	deflate_arg(want, flags);
	snprintf(what, sizeof(what), "DEFLATE %llu MiB%s, balloon holds %llu MiB",
		 want >> 20, where, s.current_bytes >> 20);
	expect_refused(what, IOC_DEFLATE, ENOSPC);
}

/* Child: drop to nobody (and so every capability), try both commands. */
static void eperm_child(int *res)
{
	struct virtio_balloon_hp_stats s = { .size = sizeof(s) };
	struct virtio_balloon_hp_deflate d = { .size = sizeof(d) };
	int fd = open(DEV_PATH, O_RDWR | O_CLOEXEC);

	d.bytes = reserve;
	if (fd < 0 || setgroups(0, NULL) ||
	    setresgid(NOBODY, NOBODY, NOBODY) ||
	    setresuid(NOBODY, NOBODY, NOBODY)) {
		res[2] = errno;
		_exit(1);
	}
	res[0] = do_ioctl(fd, IOC_STATS, &s);
	res[1] = do_ioctl(fd, IOC_DEFLATE, &d);
	_exit(0);
}

/* A caller without CAP_SYS_ADMIN gets EPERM even on a descriptor it holds. */
static void test_eperm(void)
{
	struct virtio_balloon_hp_stats before, after;
	int *res, status, same;
	pid_t pid;

	res = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		ksft_exit_fail_msg("mmap: %s\n", strerror(errno));
	vbhp_get_stats(dev_fd, &before);
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		ksft_exit_fail_msg("fork: %s\n", strerror(errno));
	if (!pid)
		eperm_child(res);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		ksft_exit_fail_msg("unprivileged child failed to set up: %s\n",
				   ename(res[2]));
	vbhp_get_stats(dev_fd, &after);
	same = vbhp_stats_unchanged(&before, &after);
	ksft_test_result(res[0] == EPERM, "STATS as uid %d: %s (want EPERM)\n",
			 NOBODY, ename(res[0]));
	ksft_test_result(res[1] == EPERM && same,
			 "DEFLATE as uid %d: %s (want EPERM), stats %s\n",
			 NOBODY, ename(res[1]), same ? "unchanged" : "CHANGED");
	munmap(res, 4096);
}

/* Without DEFLATE_ON_OOM the spec forbids going below target: EOPNOTSUPP. */
static void test_eopnotsupp(void)
{
	struct virtio_balloon_hp_stats s;
	char what[64];

	vbhp_get_stats(dev_fd, &s);
	if (s.deflate_on_oom) {
		ksft_test_result_skip("EOPNOTSUPP: deflate-on-oom is negotiated\n");
		return;
	}
	deflate_arg(reserve, 0);
	snprintf(what, sizeof(what), "DEFLATE %llu MiB without deflate-on-oom",
		 reserve >> 20);
	expect_refused(what, IOC_DEFLATE, EOPNOTSUPP);
}

/*
 * After a deflate of @got bytes: at least what was asked and at most one
 * block more, taken off current, counted once as an ioctl trigger (below
 * 4 GiB as a whole with @flags), and the balloon holds.
 */
static int deflate_ok(const struct virtio_balloon_hp_stats *a,
		      const struct virtio_balloon_hp_stats *b,
		      unsigned long long got, __u32 flags)
{
	unsigned long long block = 1ULL << (a->block_order + 12);
	unsigned long long below = b->od_below_4g_bytes - a->od_below_4g_bytes;

	return got >= reserve && got <= reserve + block && !(got & 4095) &&
	       b->current_bytes == a->current_bytes - got &&
	       b->od_events[OD_IOCTL] == a->od_events[OD_IOCTL] + 1 &&
	       b->od_bytes[OD_IOCTL] == a->od_bytes[OD_IOCTL] + got &&
	       b->hold == 1 && (flags ? below == got : below <= got);
}

/* A valid deflate of -r MiB succeeds once the host acknowledged it. */
static void test_deflate(__u32 flags, const char *where)
{
	struct virtio_balloon_hp_stats a, b;
	long long t0, ms;
	int err;

	vbhp_get_stats(dev_fd, &a);
	if (!a.deflate_on_oom) {
		ksft_test_result_skip("DEFLATE%s: no deflate-on-oom\n", where);
		return;
	}
	if (a.current_bytes < reserve) {
		ksft_test_result_skip("DEFLATE%s: the balloon holds only %llu MiB\n",
				      where, a.current_bytes >> 20);
		return;
	}
	deflate_arg(reserve, flags);
	t0 = vbhp_now_ms();
	err = do_ioctl(dev_fd, IOC_DEFLATE, &arg);
	ms = vbhp_now_ms() - t0;
	vbhp_get_stats(dev_fd, &b);
	if (!err)
		ksft_print_msg("deflate %llu MiB took %lld ms%s\n",
			       reserve >> 20, ms, flags ? " (below 4 GiB)" : "");
	ksft_print_msg("current %llu -> %llu, ioctl %llu -> %llu bytes in %llu -> %llu, hold %u\n",
		       a.current_bytes, b.current_bytes, a.od_bytes[OD_IOCTL],
		       b.od_bytes[OD_IOCTL], a.od_events[OD_IOCTL],
		       b.od_events[OD_IOCTL], b.hold);
	ksft_test_result(!err && deflate_ok(&a, &b, arg.d.deflated, flags),
			 "DEFLATE %llu MiB%s: %s, deflated %llu bytes\n",
			 reserve >> 20, where, ename(err), arg.d.deflated);
}

static void parse_args(int argc, char **argv, int *below_4g)
{
	unsigned long mib;
	char *end;
	int opt;

	while ((opt = getopt(argc, argv, "r:l")) != -1) {
		if (opt == 'r') {
			mib = strtoul(optarg, &end, 10);
			if (*end || !mib || mib > (1UL << 20))
				ksft_exit_fail_msg("-r MIB: 1 .. 1048576\n");
			reserve = (unsigned long long)mib << 20;
		} else if (opt == 'l') {
			*below_4g = 1;
		} else {
			ksft_exit_fail_msg("usage: %s [-r MIB] [-l]\n", argv[0]);
		}
	}
}

int main(int argc, char **argv)
{
	int below_4g = 0;

	parse_args(argc, argv, &below_4g);
	ksft_print_header();
	vbhp_require(VBHP_NEED_ROOT | VBHP_NEED_DEVICE);
	ksft_set_plan(NR_TESTS);
	dev_fd = open(DEV_PATH, O_RDWR | O_CLOEXEC);
	if (dev_fd < 0)
		ksft_exit_fail_msg("open " DEV_PATH ": %s\n", strerror(errno));

	test_stats();
	test_stats_grown();
	test_stats_ver0();
	test_zeroing();
	test_enotty();
	test_sizes(IOC_DEFLATE, "DEFLATE", sizeof(arg.d));
	test_sizes(IOC_STATS, "STATS", sizeof(arg.s));
	test_bad_fields();
	test_enospc(0, "");
	test_enospc(BELOW_4G, " below 4 GiB");
	test_eperm();
	test_eopnotsupp();
	test_deflate(0, "");
	if (below_4g)
		test_deflate(BELOW_4G, " below 4 GiB");
	else
		ksft_test_result_skip("DEFLATE below 4 GiB: no -l\n");
	close(dev_fd);
	ksft_finished();
}
