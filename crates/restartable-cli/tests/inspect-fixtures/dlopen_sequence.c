/*
 * A restartable sequence in a shared library loaded with dlopen, for the debugger
 * tests: the sequence's tables are not in the executable and appear only once the
 * program runs.
 *
 * Build the library: cc -g -O0 -shared -fPIC -DLIBRARY -o libsequence.so dlopen_sequence.c
 * Build the program: cc -g -O0 -o dlopen_sequence dlopen_sequence.c -ldl
 * Run: ./dlopen_sequence N /path/to/libsequence.so increments a per-CPU counter in the
 * library N times and prints "counter N done N". Exits 77 when libc did not register
 * rseq, 2 when the library cannot be loaded.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef LIBRARY
#include <sys/rseq.h>

#include "counter_sequence.h"

struct counter {
	long v;
	long pad[7];
};
static struct counter counters[4096];

/* Returns 0 when the increment committed, 1 when it aborted, 2 when the counter is
 * at `limit` (the compare-fail exit). The sequence is in counter_sequence.h. */
__attribute__((noinline)) int lib_percpu_inc(long limit)
{
	char *rs = (char *)__builtin_thread_pointer() + __rseq_offset;
	COUNTER_INC_SEQUENCE(rs, counters, limit, abort, full, "", "", "");
	return 0;
abort:
	return 1;
full:
	return 2;
}

long lib_total(void)
{
	long total = 0;
	for (int c = 0; c < 4096; c++)
		total += counters[c].v;
	return total;
}

int lib_rseq_registered(void)
{
	return __rseq_size != 0;
}
#else
#include <dlfcn.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	long done = 0;
	void *lib = dlopen(argc > 2 ? argv[2] : "./libsequence.so", RTLD_NOW);
	if (lib == NULL) {
		printf("dlopen: %s\n", dlerror());
		return 2;
	}
	int (*inc)(long) = (int (*)(long))dlsym(lib, "lib_percpu_inc");
	long (*total)(void) = (long (*)(void))dlsym(lib, "lib_total");
	int (*registered)(void) = (int (*)(void))dlsym(lib, "lib_rseq_registered");
	if (!registered()) {
		printf("rseq not registered by libc\n");
		return 77;
	}
	for (long i = 0; i < n; i++) {
		while (inc(LONG_MAX) != 0) /* INC_LINE */
			;
		done++; /* NEXT_LINE */
	}
	printf("counter %ld done %ld\n", total(), done);
	return 0;
}
#endif
