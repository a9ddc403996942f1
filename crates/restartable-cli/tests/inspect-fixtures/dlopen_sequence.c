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

struct counter {
	long v;
	long pad[7];
};
static struct counter counters[4096];

/* Returns 0 when the increment committed, 1 when it aborted, 2 when the counter is
 * at `limit` (the compare-fail exit). The same sequence as one_sequence.c. */
__attribute__((noinline)) int lib_percpu_inc(long limit)
{
	char *rs = (char *)__builtin_thread_pointer() + __rseq_offset;
	__asm__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 1f, (2f-1f), 4f\n\t"
		".popsection\n\t"
		".pushsection __rseq_cs_ptr_array, \"aw\"\n\t"
		".quad 3b\n\t"
		".popsection\n\t"
		".pushsection __rseq_exit_point_array, \"aw\"\n\t"
		".quad 1f, %l[full]\n\t"
		".popsection\n\t"
		"leaq 3b(%%rip), %%rax\n\t"
		"movq %%rax, 8(%[rs])\n\t"
		"1:\n\t"
		"movl 4(%[rs]), %%eax\n\t"
		"shlq $6, %%rax\n\t"
		"movq (%[base],%%rax), %%rcx\n\t"
		"cmpq %[limit], %%rcx\n\t"
		"jae %l[full]\n\t"
		"addq $1, %%rcx\n\t"
		"movq %%rcx, (%[base],%%rax)\n\t"
		"2:\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".byte 0x0f, 0xb9, 0x3d\n\t"
		".long 0x53053053\n\t"
		"4:\n\t"
		"jmp %l[abort]\n\t"
		".popsection\n\t"
		:
		: [rs] "r"(rs), [base] "r"(counters), [limit] "r"(limit)
		: "rax", "rcx", "memory", "cc"
		: abort, full);
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
