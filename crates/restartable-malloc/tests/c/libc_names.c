/* glibc's other names for the allocation functions (__libc_malloc and its family,
 * cfree) mixed with the usual ones both ways: an object from one name is read,
 * resized and freed through another. Under a malloc that exports only the usual
 * names, `__libc_malloc` then `free` hands glibc's object to it (an abort), and
 * `malloc` then `__libc_free` hands its object to glibc's free (a crash). The
 * output does not depend on the allocator (run with and without LD_PRELOAD). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* Small, medium and large (own mapping) sizes. */
static const size_t sizes[] = {1, 24, 100, 1000, 5000, 40000, 300000, 3 << 20};
#define NSIZES (sizeof sizes / sizeof *sizes)

int main(void) {
    /* __libc_malloc, then realloc and free. */
    for (size_t i = 0; i < NSIZES; i++) {
        unsigned char *p = __libc_malloc(sizes[i]);
        CHECK(p && ((uintptr_t)p & 15) == 0);
        fill(p, sizes[i], (unsigned)i);
        p = realloc(p, sizes[i] * 2);
        CHECK(p && same(p, sizes[i], (unsigned)i));
        free(p);
    }
    printf("__libc_malloc + realloc + free: ok\n");

    /* malloc, then __libc_realloc and __libc_free. */
    for (size_t i = 0; i < NSIZES; i++) {
        unsigned char *p = malloc(sizes[i]);
        CHECK(p != NULL);
        fill(p, sizes[i], (unsigned)i + 7);
        unsigned char *q = __libc_realloc(p, sizes[i] + 4096);
        CHECK(q && same(q, sizes[i], (unsigned)i + 7));
        q = __libc_realloc(q, sizes[i] / 2 + 1);
        CHECK(q && same(q, sizes[i] / 2 + 1, (unsigned)i + 7));
        __libc_free(q);
        unsigned char *r = malloc(sizes[i]);
        CHECK(r != NULL);
        __libc_free(r);
    }
    printf("malloc + __libc_realloc + __libc_free: ok\n");

    /* __libc_calloc: zeroed (after dirtying memory of the same size), freed by free. */
    for (size_t i = 0; i < NSIZES; i++) {
        unsigned char *d = malloc(sizes[i]);
        memset(d, 0xa5, sizes[i]);
        free(d);
        unsigned char *p = __libc_calloc(sizes[i], 1);
        CHECK(p != NULL);
        size_t nonzero = 0;
        for (size_t k = 0; k < sizes[i]; k++) nonzero += p[k] != 0;
        CHECK(nonzero == 0);
        free(p);
    }
    CHECK(__libc_calloc(SIZE_MAX / 2, 3) == NULL);
    printf("__libc_calloc + free: ok\n");

    /* __libc_memalign, __libc_valloc, __libc_pvalloc: aligned, usable, freed either way. */
    for (size_t a = 16; a <= (1 << 16); a <<= 1) {
        for (size_t i = 0; i < NSIZES; i++) {
            unsigned char *p = __libc_memalign(a, sizes[i]);
            CHECK(p && ((uintptr_t)p & (a - 1)) == 0);
            fill(p, sizes[i], (unsigned)a);
            CHECK(same(p, sizes[i], (unsigned)a));
            if (i & 1)
                free(p);
            else
                __libc_free(p);
        }
    }
    unsigned char *v = __libc_valloc(100);
    CHECK(v && ((uintptr_t)v & 4095) == 0);
    fill(v, 100, 3);
    __libc_free(v);
    unsigned char *pv = __libc_pvalloc(5000);
    CHECK(pv && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= 8192);
    fill(pv, 8192, 4);
    CHECK(same(pv, 8192, 4));
    free(pv);
    printf("__libc_memalign, __libc_valloc, __libc_pvalloc: ok\n");

    /* cfree: a compatibility symbol in glibc (new programs cannot link it), found
     * with dlsym as old binaries find it; glibc's own is versioned GLIBC_2.2.5. */
    void (*cfree_fn)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    if (!cfree_fn) cfree_fn = (void (*)(void *))dlvsym(RTLD_DEFAULT, "cfree", "GLIBC_2.2.5");
    CHECK(cfree_fn != NULL);
    if (cfree_fn) {
        for (size_t i = 0; i < NSIZES; i++) {
            unsigned char *p = malloc(sizes[i]);
            fill(p, sizes[i], 9);
            CHECK(same(p, sizes[i], 9));
            cfree_fn(p);
            p = __libc_malloc(sizes[i]);
            cfree_fn(p);
        }
    }
    printf("cfree: ok\n");

    /* Interleaved, many at once: half from each family, freed by the other. */
    enum { N = 20000 };
    static unsigned char *objs[N];
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 37) % 3000;
        objs[i] = (i & 1) ? malloc(n) : __libc_malloc(n);
        CHECK(objs[i] != NULL);
        fill(objs[i], n, (unsigned)i);
    }
    size_t bad = 0;
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 37) % 3000;
        bad += !same(objs[i], n, (unsigned)i);
        if (i & 1)
            __libc_free(objs[i]);
        else
            free(objs[i]);
    }
    CHECK(bad == 0);
    printf("interleaved: ok\n");

    /* Failures as glibc's: NULL with errno ENOMEM (EINVAL for an alignment above
     * SIZE_MAX / 2 + 1); an alignment that is not a power of two rounded up;
     * __libc_realloc(p, 0) frees p and returns NULL. (Added by the review.) */
    errno = 0;
    CHECK(__libc_malloc(SIZE_MAX - 4096) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(__libc_calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(__libc_memalign(64, SIZE_MAX - 4096) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(__libc_memalign(SIZE_MAX / 2 + 2, 16) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(__libc_valloc(SIZE_MAX - 4096) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(__libc_pvalloc(SIZE_MAX - 100) == NULL && errno == ENOMEM);
    errno = 0;
    void *big = malloc(100);
    CHECK(__libc_realloc(big, SIZE_MAX - 4096) == NULL && errno == ENOMEM);
    __libc_free(big);
    unsigned char *odd = __libc_memalign(48, 100);
    CHECK(odd && ((uintptr_t)odd & 63) == 0);
    free(odd);
    unsigned char *z = __libc_pvalloc(0);
    CHECK(z != NULL);
    free(z);
    unsigned char *one = __libc_pvalloc(1);
    CHECK(one && ((uintptr_t)one & 4095) == 0 && malloc_usable_size(one) >= 4096);
    free(one);
    CHECK(__libc_realloc(malloc(100), 0) == NULL);
    __libc_free(NULL);
    printf("failures, odd alignments, pvalloc(0), realloc(p, 0): ok\n");

    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
