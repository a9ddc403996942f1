/*
 * One restartable sequence written by hand in the reference layout (librseq, the
 * kernel selftests): a per-CPU counter increment with a compare-fail exit, retried
 * until it commits. Used by the `rseq inspect` and gdb tests.
 *
 * Build: cc -g -O0 one_sequence.c (the sequence in the function percpu_inc, with the
 * symbols fixture_start / fixture_post_commit / fixture_abort on its addresses), or
 * cc -g -O2 -DINLINE_SEQUENCE one_sequence.c (percpu_inc inlined into main).
 * Run: ./a.out N increments the counter N times and prints "counter N done N".
 * Exits 77 when libc did not register rseq (nothing to test).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/rseq.h>

#include "counter_sequence.h"

struct counter {
	long v;
	long pad[7];
};
static struct counter counters[4096];

#ifdef INLINE_SEQUENCE
#define SEQUENCE_FN static inline __attribute__((always_inline)) int
#define NAME_LABEL(name) ""
#else
#define SEQUENCE_FN __attribute__((noinline)) static int
#define NAME_LABEL(name) name ":\n\t"
#endif

/* Returns 0 when the increment committed, 1 when it aborted, 2 when the counter is
 * at `limit` (the compare-fail exit, listed in __rseq_exit_point_array). */
SEQUENCE_FN percpu_inc(long limit)
{
	char *rs = (char *)__builtin_thread_pointer() + __rseq_offset;
	COUNTER_INC_SEQUENCE(rs, counters, limit, abort, full,
			     NAME_LABEL("fixture_start"),
			     NAME_LABEL("fixture_post_commit"),
			     NAME_LABEL("fixture_abort"));
	return 0;
abort:
	return 1;
full:
	return 2;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	long done = 0, total = 0;
	if (__rseq_size == 0) {
		printf("rseq not registered by libc\n");
		return 77;
	}
	for (long i = 0; i < n; i++) {
		while (percpu_inc(LONG_MAX) != 0) /* INC_LINE */
			;
		done++; /* NEXT_LINE */
	}
	for (int c = 0; c < 4096; c++)
		total += counters[c].v;
	printf("counter %ld done %ld\n", total, done);
	return 0;
}
