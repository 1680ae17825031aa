// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_fragment - fragment guest memory so no 2 MiB block is free, then
 * (with -H) hold it that way until SIGTERM/SIGINT.
 *
 * How: fill MiB of anonymous memory with 4 KiB pages (THP off for the
 * range), then free every other 4 KiB page.  Each 2 MiB pageblock the fill
 * took keeps 256 pages in use and 256 free, so the buddy allocator holds
 * the freed half as order-0 pages.  Compaction could migrate the survivors
 * and undo it, so the program first sets vm.extfrag_threshold=1000 (no
 * compaction for costly orders) and vm.compaction_proactiveness=0.
 *
 * With -l LOW the holes go only where compaction's migration scanner, which
 * walks each zone upwards, is sure to reach them: the program reads the
 * frame number of each of its pages from /proc/self/pagemap (root only),
 * frees the odd frames among the lowest LOW MiB of them, and holds all of
 * its higher frames until it exits.  What is allocated into the holes then
 * lies below free memory once the program is gone.
 *
 * Usage: vbhp_fragment -m MIB [-l LOW] [-H]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/types.h>

#include "vbhp_ksft.h"

#define PAGE		4096UL
#define BLOCK_ORDER	9

/* Free memory (MiB) held in free blocks of order >= 9, from buddyinfo. */
static long free_huge_mib(void)
{
	FILE *f = fopen("/proc/buddyinfo", "r");
	char line[512];
	long mib = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = strstr(line, "zone");
		int order = 0, n;
		long count;

		if (!p)
			continue;
		p += 4;
		while (*p == ' ')
			p++;
		p = strchr(p, ' ');	/* skip the zone name */
		while (p && sscanf(p, "%ld%n", &count, &n) == 1) {
			if (order >= BLOCK_ORDER)
				mib += count << (order - 8);	/* order 8 = 1 MiB */
			order++;
			p += n;
		}
	}
	fclose(f);
	return mib;
}

static int write_sysctl(const char *path, const char *val)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fputs(val, f) >= 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* Fill @pfn with the frame number of each of the @pages pages at @mem. */
static int read_pfns(const char *mem, unsigned long pages, __u64 *pfn)
{
	const __u64 present = 1ULL << 63, pfn_mask = (1ULL << 55) - 1;
	off_t pos = (unsigned long)mem / PAGE * sizeof(*pfn);
	size_t len = pages * sizeof(*pfn), done = 0;
	unsigned long i;
	int fd;

	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return -1;
	while (done < len) {
		ssize_t n = pread(fd, (char *)pfn + done, len - done, pos + done);

		if (n <= 0)
			break;
		done += n;
	}
	close(fd);
	if (done < len)
		return -1;
	for (i = 0; i < pages; i++) {
		if (!(pfn[i] & present) || !(pfn[i] & pfn_mask))
			return -1;	/* not resident, or frame numbers hidden */
		pfn[i] &= pfn_mask;
	}
	return 0;
}

static int cmp_pfn(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return x < y ? -1 : x > y;
}

/*
 * Free the odd frames among the lowest @low_mib MiB of the range; hold the
 * rest.  Returns the first frame number above the fragmented ones.
 */
static __u64 fragment_low(char *mem, unsigned long len, long low_mib)
{
	unsigned long pages = len / PAGE, low = (unsigned long)low_mib << 8, i;
	__u64 *pfn = calloc(pages, sizeof(*pfn)), *sorted, limit;

	sorted = calloc(pages, sizeof(*sorted));
	if (!pfn || !sorted || read_pfns(mem, pages, pfn))
		ksft_exit_fail_msg("cannot read frame numbers from /proc/self/pagemap\n");
	memcpy(sorted, pfn, pages * sizeof(*pfn));
	qsort(sorted, pages, sizeof(*sorted), cmp_pfn);
	limit = low < pages ? sorted[low] : sorted[pages - 1] + 1;
	for (i = 0; i < pages; i++)
		if (pfn[i] < limit && (pfn[i] & 1))
			madvise(mem + i * PAGE, PAGE, MADV_DONTNEED);
	free(sorted);
	free(pfn);
	return limit;
}

/* Keep the memory fragmented until SIGTERM or SIGINT. */
static void wait_for_stop(long mib)
{
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	ksft_print_msg("holding %ld MiB\n", mib);
	fflush(stdout);
	sigwait(&set, &sig);
}

int main(int argc, char **argv)
{
	long mib = 0, low_mib = 0, before, after;
	unsigned long len, off;
	int hold = 0, opt;
	char *mem;

	while ((opt = getopt(argc, argv, "m:l:H")) != -1) {
		if (opt == 'm')
			mib = atol(optarg);
		else if (opt == 'l')
			low_mib = atol(optarg);
		else if (opt == 'H')
			hold = 1;
		else
			ksft_exit_fail_msg("usage: %s -m MIB [-l LOW] [-H]\n", argv[0]);
	}
	ksft_print_header();
	ksft_set_plan(2);
	if (mib <= 0 || low_mib < 0 || low_mib > mib)
		ksft_exit_fail_msg("-m MIB is required, and -l LOW must be 0 to MIB\n");

	ksft_test_result(!write_sysctl("/proc/sys/vm/extfrag_threshold", "1000") &&
			 !write_sysctl("/proc/sys/vm/compaction_proactiveness", "0"),
			 "compaction held off\n");

	before = free_huge_mib();
	len = (unsigned long)mib << 20;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		ksft_exit_fail_msg("mmap %ld MiB failed\n", mib);
	madvise(mem, len, MADV_NOHUGEPAGE);
	for (off = 0; off < len; off += PAGE)
		mem[off] = 1;
	if (low_mib)
		ksft_print_msg("holes below frame 0x%llx\n",
			       (unsigned long long)fragment_low(mem, len, low_mib));
	else
		for (off = PAGE; off < len; off += 2 * PAGE)
			madvise(mem + off, PAGE, MADV_DONTNEED);
	after = free_huge_mib();

	ksft_print_msg("free in order >= %d blocks: %ld MiB before, %ld MiB after\n",
		       BLOCK_ORDER, before, after);
	ksft_test_result(after <= before - mib / 2,
			 "fragmented: %ld MiB in order >= %d blocks left\n",
			 after, BLOCK_ORDER);

	if (hold)
		wait_for_stop(low_mib ? mib - low_mib / 2 : mib / 2);
	munmap(mem, len);
	if (ksft_get_fail_cnt())
		ksft_exit_fail();
	ksft_exit_pass();
}
