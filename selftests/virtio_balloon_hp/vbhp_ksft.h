/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vbhp_ksft.h - the TAP helpers the virtio_balloon_hp selftests use.
 *
 * Inside a kernel tree (tools/testing/selftests/virtio_balloon_hp) the
 * Makefile defines VBHP_KERNEL_KSFT and the kernel's own kselftest.h is
 * used.  Standalone (a guest with no kernel source, e.g. the DKMS source
 * copy) this file supplies a small TAP 13 writer of ours with the same
 * names, for the part of the kselftest API these programs call and nothing
 * more: exit codes, plan, results, diagnostics, and a "# Totals:" line.
 */
#ifndef VBHP_KSFT_H
#define VBHP_KSFT_H

#ifdef VBHP_KERNEL_KSFT
#include "kselftest.h"
#else

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

/* Exit codes, as the kselftest runners read them. */
#define KSFT_PASS	0
#define KSFT_FAIL	1
#define KSFT_SKIP	4

static struct {
	unsigned int plan, pass, fail, skip;
} vbhp_tap;

static inline unsigned int vbhp_tap_done(void)
{
	return vbhp_tap.pass + vbhp_tap.fail + vbhp_tap.skip;
}

/* Print @pre, then the caller's format; errno survives for %m. */
static inline void vbhp_tap_vline(const char *pre, const char *fmt, va_list ap)
{
	int err = errno;

	fputs(pre, stdout);
	errno = err;
	vprintf(fmt, ap);
}

static inline void ksft_print_header(void)
{
	printf("TAP version 13\n");
}

static inline void ksft_set_plan(unsigned int plan)
{
	vbhp_tap.plan = plan;
	printf("1..%u\n", plan);
}

static inline int ksft_get_fail_cnt(void)
{
	return vbhp_tap.fail;
}

static inline void ksft_print_msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbhp_tap_vline("# ", fmt, ap);
	va_end(ap);
}

/* One result line: "ok N", "not ok N" or "ok N # SKIP", then the text. */
static inline void vbhp_tap_result(unsigned int *count, const char *verdict,
				   const char *fmt, va_list ap)
{
	char pre[48];

	(*count)++;
	snprintf(pre, sizeof(pre), verdict, vbhp_tap_done());
	vbhp_tap_vline(pre, fmt, ap);
}

static inline void ksft_test_result_pass(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbhp_tap_result(&vbhp_tap.pass, "ok %u ", fmt, ap);
	va_end(ap);
}

static inline void ksft_test_result_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbhp_tap_result(&vbhp_tap.fail, "not ok %u ", fmt, ap);
	va_end(ap);
}

static inline void ksft_test_result_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbhp_tap_result(&vbhp_tap.skip, "ok %u # SKIP ", fmt, ap);
	va_end(ap);
}

#define ksft_test_result(cond, ...) do {		\
	if (cond)					\
		ksft_test_result_pass(__VA_ARGS__);	\
	else						\
		ksft_test_result_fail(__VA_ARGS__);	\
} while (0)

static inline _Noreturn void vbhp_tap_exit(int code)
{
	if (vbhp_tap.plan != vbhp_tap_done())
		printf("# Planned tests != run tests (%u != %u)\n",
		       vbhp_tap.plan, vbhp_tap_done());
	printf("# Totals: pass:%u fail:%u xfail:0 xpass:0 skip:%u error:0\n",
	       vbhp_tap.pass, vbhp_tap.fail, vbhp_tap.skip);
	fflush(stdout);
	exit(code);
}

static inline _Noreturn void ksft_exit_pass(void)
{
	vbhp_tap_exit(KSFT_PASS);
}

static inline _Noreturn void ksft_exit_fail(void)
{
	vbhp_tap_exit(KSFT_FAIL);
}

static inline _Noreturn void
ksft_exit_fail_msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vbhp_tap_vline("Bail out! ", fmt, ap);
	va_end(ap);
	vbhp_tap_exit(KSFT_FAIL);
}

/*
 * The whole program does not apply.  Before any plan or result this is
 * "1..0 # SKIP reason"; later it is one more skipped result.
 */
static inline _Noreturn void
ksft_exit_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vbhp_tap.plan || vbhp_tap_done())
		vbhp_tap_result(&vbhp_tap.skip, "ok %u # SKIP ", fmt, ap);
	else
		vbhp_tap_vline("1..0 # SKIP ", fmt, ap);
	va_end(ap);
	vbhp_tap_exit(KSFT_SKIP);
}

/* Pass when every planned test ran and none failed. */
#define ksft_finished() do {						\
	if (vbhp_tap.plan == vbhp_tap.pass + vbhp_tap.skip)		\
		ksft_exit_pass();					\
	ksft_exit_fail();						\
} while (0)

#endif /* VBHP_KERNEL_KSFT */
#endif /* VBHP_KSFT_H */
