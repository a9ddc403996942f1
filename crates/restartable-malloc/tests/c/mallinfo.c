/* mallinfo2 and mallinfo report the heap the program uses: uordblks grows by at
 * least N after N bytes of small objects are allocated and falls back after they
 * are freed; uordblks + hblkhd (what the program holds, in glibc's terms) does the
 * same for a large object, and with the argument "mmapped" hblkhd alone must (ours
 * maps every large object; glibc may serve one from its heap). With "stats", calls
 * malloc_stats() at the end (it prints to stderr). Prints one line per check (the
 * same with any allocator that reports its own heap: glibc's and ours). */
#define _GNU_SOURCE
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* mallinfo */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"

#define N (8u << 20)   /* bytes of small objects */
#define SIZE 100       /* each */
#define LARGE (4u << 20)
/* What else may move uordblks meanwhile (stdio's buffer, the allocator's own). */
#define SLACK (256u << 10)

static int has(int argc, char **argv, const char *arg) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], arg) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    enum { COUNT = N / SIZE + 1 };
    char **objs = malloc(COUNT * sizeof *objs);
    printf("start\n"); /* stdio's buffer allocated before the first reading */
    struct mallinfo2 a = mallinfo2();
    struct mallinfo ai = mallinfo();
    for (int i = 0; i < COUNT; i++) {
        objs[i] = malloc(SIZE);
        memset(objs[i], i, SIZE);
    }
    struct mallinfo2 b = mallinfo2();
    struct mallinfo bi = mallinfo();
    fprintf(stderr, "uordblks: before %zu, after %u bytes in %d objects %zu, ", a.uordblks,
            N, COUNT, b.uordblks);
    CHECK(b.uordblks >= a.uordblks + N);
    CHECK((size_t)bi.uordblks >= (size_t)ai.uordblks + N);
    CHECK(b.arena >= b.uordblks);
    printf("uordblks grows by the bytes allocated: %s\n", failures ? "NO" : "yes");

    int bad = 0;
    for (int i = 0; i < COUNT; i++) {
        bad += objs[i][SIZE - 1] != (char)i;
        free(objs[i]);
    }
    CHECK(bad == 0);
    struct mallinfo2 c = mallinfo2();
    struct mallinfo ci = mallinfo();
    fprintf(stderr, "after free %zu\n", c.uordblks);
    int before = failures;
    CHECK(c.uordblks + N <= b.uordblks);
    CHECK(c.uordblks <= a.uordblks + SLACK);
    CHECK((size_t)ci.uordblks <= (size_t)ai.uordblks + SLACK);
    printf("uordblks falls back after free: %s\n", failures > before ? "NO" : "yes");

    before = failures;
    char *big = malloc(LARGE);
    memset(big, 1, LARGE);
    struct mallinfo2 d = mallinfo2();
    struct mallinfo di = mallinfo();
    free(big);
    struct mallinfo2 e = mallinfo2();
    CHECK(d.uordblks + d.hblkhd >= c.uordblks + c.hblkhd + LARGE);
    CHECK((size_t)di.uordblks + (size_t)di.hblkhd >= (size_t)ci.uordblks + (size_t)ci.hblkhd + LARGE);
    CHECK(e.uordblks + e.hblkhd + LARGE <= d.uordblks + d.hblkhd);
    if (has(argc, argv, "mmapped")) {
        CHECK(d.hblkhd >= c.hblkhd + LARGE);
        CHECK(e.hblkhd + LARGE <= d.hblkhd);
    }
    fprintf(stderr, "hblkhd: %zu, with a %u-byte object %zu, after free %zu\n", c.hblkhd,
            LARGE, d.hblkhd, e.hblkhd);
    printf("a large object counts while it lives: %s\n", failures > before ? "NO" : "yes");
    free(objs);

    if (has(argc, argv, "stats")) {
        fflush(stdout);
        malloc_stats();
    }
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
