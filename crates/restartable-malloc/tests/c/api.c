/* The C allocation API's glibc semantics, checked from C. Prints one line per check
 * group and exits 0 only if every check passed; the output does not depend on the
 * allocator (run with and without LD_PRELOAD and compared). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"

int main(void) {
    /* malloc: sizes across every class and large ones, 16-byte aligned, usable. */
    size_t sizes[] = {0, 1, 8, 15, 16, 17, 100, 128, 129, 1000, 4096, 8192, 10000,
                      65536, 100000, 262144, 262145, 1 << 20, 5 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(n);
        CHECK(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= n);
        fill(p, n, (unsigned)i);
        CHECK(same(p, n, (unsigned)i));
        free(p);
    }
    printf("malloc: ok\n");

    /* malloc(0) gives distinct pointers; free(NULL) is a no-op. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2);
    free(z1);
    free(z2);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);
    printf("malloc(0), free(NULL): ok\n");

    /* Failure: ENOMEM and NULL. */
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    printf("malloc failure: ok\n");

    /* calloc: zeroed, overflow-checked. */
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        /* Dirty the memory first so a reused object must be cleared. */
        unsigned char *d = malloc(n);
        if (d) memset(d, 0xa5, n);
        free(d);
        unsigned char *p = calloc(1, n);
        CHECK(p != NULL);
        for (size_t k = 0; k < n; k++)
            if (p[k]) { CHECK(p[k] == 0); break; }
        free(p);
    }
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    void *c0 = calloc(0, 0);
    CHECK(c0 != NULL);
    free(c0);
    printf("calloc: ok\n");

    /* realloc: NULL is malloc, grow/shrink keep contents, 0 frees and gives NULL. */
    unsigned char *r = realloc(NULL, 10);
    CHECK(r != NULL);
    fill(r, 10, 7);
    size_t steps[] = {20, 100, 5000, 300000, 2 << 20, 400000, 200, 24, 3};
    size_t have = 10;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        size_t n = steps[i];
        r = realloc(r, n);
        CHECK(r != NULL);
        size_t keep = have < n ? have : n;
        CHECK(same(r, keep, 7));
        fill(r, n, 7);
        have = n;
    }
    errno = 0;
    unsigned char *big = realloc(r, SIZE_MAX - 100);
    CHECK(big == NULL && errno == ENOMEM);
    CHECK(same(r, have, 7)); /* untouched on failure */
    CHECK(realloc(r, 0) == NULL);
    void *r0 = realloc(NULL, 0);
    CHECK(r0 != NULL);
    free(r0);
    printf("realloc: ok\n");

    /* reallocarray: overflow is ENOMEM, the old object stays. */
    int *a = reallocarray(NULL, 100, sizeof(int));
    CHECK(a != NULL);
    for (int i = 0; i < 100; i++) a[i] = i;
    errno = 0;
    CHECK(reallocarray(a, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    a = reallocarray(a, 1000, sizeof(int));
    CHECK(a != NULL);
    for (int i = 0; i < 100; i++) CHECK(a[i] == i);
    free(a);
    printf("reallocarray: ok\n");

    /* posix_memalign: EINVAL for bad alignments (errno untouched), aligned results. */
    void *pm = NULL;
    errno = 1234;
    CHECK(posix_memalign(&pm, 3, 10) == EINVAL);
    CHECK(posix_memalign(&pm, 4, 10) == EINVAL);
    CHECK(posix_memalign(&pm, 24, 10) == EINVAL);
    CHECK(errno == 1234);
    for (size_t al = 8; al <= (1 << 22); al <<= 1) {
        size_t ns[] = {0, 1, 100, al, 3 * al + 1, 300000};
        for (size_t k = 0; k < 6; k++) {
            void *q = NULL;
            CHECK(posix_memalign(&q, al, ns[k]) == 0);
            CHECK(q != NULL && ((uintptr_t)q & (al - 1)) == 0);
            CHECK(malloc_usable_size(q) >= ns[k]);
            memset(q, 1, ns[k]);
            free(q);
        }
    }
    CHECK(posix_memalign(&pm, 64, SIZE_MAX - 1000) == ENOMEM);
    printf("posix_memalign: ok\n");

    /* memalign/aligned_alloc as glibc 2.36: non-powers of two round up. */
    for (size_t al = 1; al <= (1 << 16); al = al * 2 + (al & 1)) {
        void *q = memalign(al, 77);
        CHECK(q != NULL);
        size_t p2 = 1;
        while (p2 < al) p2 <<= 1;
        CHECK(((uintptr_t)q & (p2 - 1)) == 0);
        free(q);
        q = aligned_alloc(al, 4096);
        CHECK(q != NULL && ((uintptr_t)q & (p2 - 1)) == 0);
        free(q);
    }
    void *m3 = memalign(48, 100);
    CHECK(m3 != NULL && ((uintptr_t)m3 & 63) == 0);
    free(m3);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 10) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(64, SIZE_MAX - 10) == NULL && errno == ENOMEM);
    printf("memalign, aligned_alloc: ok\n");

    /* valloc page-aligned; pvalloc page-aligned and a whole number of pages. */
    void *v = valloc(10);
    CHECK(v && ((uintptr_t)v & 4095) == 0);
    free(v);
    void *pv = pvalloc(1);
    CHECK(pv && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= 4096);
    memset(pv, 2, 4096);
    free(pv);
    pv = pvalloc(0); /* glibc rounds 0 to 0 pages: a minimal object */
    CHECK(pv && ((uintptr_t)pv & 4095) == 0);
    free(pv);
    pv = pvalloc(5000);
    CHECK(pv && malloc_usable_size(pv) >= 8192);
    memset(pv, 3, 8192);
    free(pv);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL && errno == ENOMEM);
    printf("valloc, pvalloc: ok\n");

    /* Many live objects of mixed sizes, then freed in another order. */
    enum { N = 20000 };
    static void *live[N];
    static size_t len[N];
    unsigned s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1103515245 + 12345;
        len[i] = (s >> 8) % (i % 100 == 0 ? 400000 : 2000);
        live[i] = malloc(len[i]);
        CHECK(live[i] != NULL);
        fill(live[i], len[i], (unsigned)i);
    }
    for (int i = 0; i < N; i += 2) {
        CHECK(same(live[i], len[i], (unsigned)i));
        free(live[i]);
    }
    for (int i = N - 1; i > 0; i -= 2) {
        CHECK(same(live[i], len[i], (unsigned)i));
        free(live[i]);
    }
    printf("mixed: ok\n");

    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
