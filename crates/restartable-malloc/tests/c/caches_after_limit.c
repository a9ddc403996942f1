/* The per-CPU caches come back after the address space ran out while they were
 * being set up: RLIMIT_AS is lowered before the program's first allocation, to the
 * address space mapped plus 8 MiB (less than the cache region, enough for a span's
 * region, its page-map leaf and its records), so the caches cannot be mapped and
 * the first objects come from the central lists; then the limit is raised and the
 * program allocates on. malloc_stats prints the allocator's mode at both points
 * (the test reads it: with the library, "no per-CPU caches set up" first, per-CPU
 * caches after). Objects are checked throughout, and errno around each call: the
 * set-up tried again inside a malloc or a free that succeeds leaves it alone.
 * Prints a fixed transcript. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checks.h"

enum { N = 2000 };
static unsigned char *objs[N];

/* Successful calls that left errno alone, and those that changed it. */
static int errno_kept, errno_changed;

static void errno_was_kept(int kept) {
    if (kept)
        errno_kept++;
    else
        errno_changed++;
}

/* Allocates and frees N objects of a few sizes, pattern checked; errno is set before
 * each call and must be the same after it (every call succeeds: free always, malloc
 * with the room left, even when the set-up of the caches fails inside it). */
static void churn(unsigned seed) {
    for (int i = 0; i < N; i++) {
        size_t n = 16 + (size_t)(i % 7) * 40;
        errno = 4321;
        objs[i] = malloc(n);
        errno_was_kept(errno == 4321);
        CHECK(objs[i] != NULL);
        if (objs[i]) fill(objs[i], n, seed + i);
    }
    for (int i = 0; i < N; i++) {
        size_t n = 16 + (size_t)(i % 7) * 40;
        if (objs[i]) CHECK(same(objs[i], n, seed + i));
        errno = 4321;
        free(objs[i]);
        errno_was_kept(errno == 4321);
    }
}

static void say(const char *s) { (void)!write(2, s, strlen(s)); }

int main(void) {
    /* Nothing allocated before this point: the limit comes first. */
    limit_address_space(8 << 20);
    churn(1);
    say("--- limited\n");
    malloc_stats();
    unlimit_address_space();
    for (int round = 0; round < 20; round++) churn(2 + round);
    say("--- unlimited\n");
    malloc_stats();
    printf("objects kept their contents under the limit and after it\n");
    /* After the checks' messages (stdio may set errno): the counts. */
    if (errno_changed) fprintf(stderr, "errno changed by %d successful calls of %d\n",
                               errno_changed, errno_changed + errno_kept);
    CHECK(errno_changed == 0);
    if (errno_changed == 0) printf("errno unchanged by every successful malloc and free\n");
    if (failures == 0) printf("all checks passed\n");
    return failures != 0;
}
