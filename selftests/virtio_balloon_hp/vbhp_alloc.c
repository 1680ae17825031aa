// SPDX-License-Identifier: GPL-2.0
/*
 * vbhp_alloc - memory pressure with a latency figure: allocate MIB of
 * anonymous memory in chunks and write to every 4 KiB page of it, so that
 * the guest must really find the memory (from the balloon, on demand,
 * when it holds the rest).
 *
 * Usage: vbhp_alloc -m MIB [-t SECONDS] [-c CHUNK_MIB] [-H]
 *   -m MIB        memory to allocate and touch
 *   -t SECONDS    keep going: allocate and touch everything, free it all,
 *                 again, until SECONDS have passed
 *   -c CHUNK_MIB  size of one mmap() (default 64)
 *   -H            madvise(MADV_HUGEPAGE) each chunk before touching it, so
 *                 that its faults ask for transparent huge pages (and, with
 *                 THP defrag=madvise, reclaim and compact for them)
 *
 * Prints "vbhp_alloc: allocated N MiB in X ms" for the first round and,
 * with -t, "vbhp_alloc: R rounds of N MiB in S s" at the end; exits 0.
 * When mmap() fails it prints "vbhp_alloc: error: ..." and exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE		4096UL
#define MAX_MIB		16777216L	/* 16 TiB: far beyond any test guest */

static long total_mib, chunk_mib = 64, seconds;
static int huge;
static char **chunks;
static long nr_chunks;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static size_t chunk_len(long i)
{
	long mib = total_mib - i * chunk_mib;

	return (size_t)(mib < chunk_mib ? mib : chunk_mib) << 20;
}

/* Map every chunk and write to each of its pages; exits 1 if mmap fails. */
static void alloc_all(void)
{
	size_t len, off;
	long i;

	for (i = 0; i < nr_chunks; i++) {
		len = chunk_len(i);
		chunks[i] = mmap(NULL, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (chunks[i] == MAP_FAILED) {
			fprintf(stderr, "vbhp_alloc: error: mmap of %zu MiB after %ld MiB: %s\n",
				len >> 20, i * chunk_mib, strerror(errno));
			exit(1);
		}
		if (huge && madvise(chunks[i], len, MADV_HUGEPAGE)) {
			fprintf(stderr, "vbhp_alloc: error: MADV_HUGEPAGE: %s\n",
				strerror(errno));
			exit(1);
		}
		for (off = 0; off < len; off += PAGE)
			chunks[i][off] = 1;
	}
}

static void free_all(void)
{
	long i;

	for (i = 0; i < nr_chunks; i++)
		munmap(chunks[i], chunk_len(i));
}

/* A positive number of at most @max from @s, or exit with a usage message. */
static long parse_num(const char *s, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v <= 0 || v > max) {
		fprintf(stderr, "vbhp_alloc: %s must be 1 .. %ld\n", what, max);
		exit(2);
	}
	return v;
}

static void parse_args(int argc, char **argv)
{
	int opt;

	while ((opt = getopt(argc, argv, "m:t:c:H")) != -1) {
		if (opt == 'm') {
			total_mib = parse_num(optarg, MAX_MIB, "-m MIB");
		} else if (opt == 't') {
			seconds = parse_num(optarg, 86400, "-t SECONDS");
		} else if (opt == 'c') {
			chunk_mib = parse_num(optarg, MAX_MIB, "-c CHUNK_MIB");
		} else if (opt == 'H') {
			huge = 1;
		} else {
			fprintf(stderr, "usage: %s -m MIB [-t SECONDS] [-c CHUNK_MIB] [-H]\n",
				argv[0]);
			exit(2);
		}
	}
	if (!total_mib) {
		fprintf(stderr, "usage: %s -m MIB [-t SECONDS] [-c CHUNK_MIB] [-H]\n",
			argv[0]);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	long long start, t;
	long rounds = 1;

	parse_args(argc, argv);
	nr_chunks = (total_mib + chunk_mib - 1) / chunk_mib;
	chunks = calloc(nr_chunks, sizeof(*chunks));
	if (!chunks) {
		fprintf(stderr, "vbhp_alloc: error: %s\n", strerror(errno));
		return 1;
	}

	start = now_ms();
	alloc_all();
	t = now_ms();
	printf("vbhp_alloc: allocated %ld MiB in %lld ms\n", total_mib, t - start);
	fflush(stdout);
	free_all();
	while (seconds && t - start < seconds * 1000LL) {
		alloc_all();
		free_all();
		rounds++;
		t = now_ms();
	}
	if (seconds)
		printf("vbhp_alloc: %ld rounds of %ld MiB in %lld s\n", rounds,
		       total_mib, (t - start) / 1000);
	free(chunks);
	return 0;
}
