/* The C API's edge cases, printed one line each (NULL or not, errno, alignment) so
 * that the transcript is compared between glibc's allocator and ours: alignments of
 * 0, 1, 2, 3, 24, 48, SIZE_MAX / 2 + 1 and above for memalign, aligned_alloc and
 * posix_memalign (glibc 2.36 rounds the others up for memalign and aligned_alloc);
 * sizes at PTRDIFF_MAX, SIZE_MAX and just below for every entry point; calloc with
 * one factor 0; reallocarray of 0 elements and overflowing; realloc of small and
 * large objects to sizes no allocator can give (the object stays intact); errno
 * left alone by successful calls. (Alignments like 2^40, which glibc refuses and
 * this allocator maps as address space only, are left out.) */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"

#define R(expr)                                                                       \
    do {                                                                              \
        errno = 0;                                                                    \
        void *p_ = (expr);                                                            \
        int e_ = errno;                                                               \
        printf("%-40s -> %s, errno %d%s\n", #expr, p_ ? "object" : "NULL", e_,       \
               p_ && ((uintptr_t)p_ & 15) ? ", not 16-aligned" : "");                \
        free(p_);                                                                     \
    } while (0)

#define PM(al, n)                                                                     \
    do {                                                                              \
        void *q_ = (void *)1;                                                         \
        errno = 0;                                                                    \
        int r_ = posix_memalign(&q_, al, n);                                          \
        printf("posix_memalign(%s, %s) -> %d, %s\n", #al, #n, r_,                    \
               q_ == (void *)1 ? "untouched" : q_ ? "object" : "NULL");               \
        if (r_ == 0) free(q_);                                                        \
    } while (0)

/* realloc of an object of `n` bytes to `to`: NULL with ENOMEM, the object intact. */
static void realloc_fails(size_t n, size_t to, const char *what) {
    unsigned char *p = malloc(n);
    CHECK(p != NULL);
    fill(p, n < 4096 ? n : 4096, 9);
    errno = 0;
    void *q = realloc(p, to);
    int e = errno;
    printf("realloc(%s) -> %s, errno %d, object %s\n", what, q ? "object" : "NULL", e,
           same(p, n < 4096 ? n : 4096, 9) ? "intact" : "changed");
    free(q ? q : p);
}

int main(void) {
    R(malloc(PTRDIFF_MAX));
    R(malloc((size_t)PTRDIFF_MAX + 1));
    R(malloc(PTRDIFF_MAX - 4096));
    R(malloc(SIZE_MAX));
    R(calloc(0, SIZE_MAX));
    R(calloc(SIZE_MAX, 0));
    R(calloc(1, PTRDIFF_MAX));
    R(calloc(PTRDIFF_MAX, 1));
    R(memalign(0, 10));
    R(memalign(1, 10));
    R(memalign(2, 10));
    R(memalign(3, 10));
    R(memalign(24, 10));
    R(memalign(48, 100));
    R(memalign(SIZE_MAX / 2 + 1, 10));
    R(memalign(SIZE_MAX / 2 + 2, 10));
    R(memalign(SIZE_MAX, 10));
    R(memalign(4096, SIZE_MAX));
    R(memalign(4096, SIZE_MAX - 8192));
    R(memalign(64, PTRDIFF_MAX));
    R(aligned_alloc(0, 10));
    R(aligned_alloc(3, 10));
    R(aligned_alloc(4096, 0));
    R(aligned_alloc(SIZE_MAX, 10));
    R(aligned_alloc(SIZE_MAX / 2 + 1, 10));
    R(valloc(0));
    R(valloc(SIZE_MAX));
    R(valloc(SIZE_MAX - 4096));
    R(valloc(PTRDIFF_MAX));
    R(pvalloc(SIZE_MAX));
    R(pvalloc(SIZE_MAX - 4095));
    R(pvalloc(SIZE_MAX - 4096));
    R(pvalloc(SIZE_MAX - 8192));
    R(pvalloc(PTRDIFF_MAX));
    PM(0, 10);
    PM(1, 10);
    PM(2, 10);
    PM(4, 10);
    PM(8, 0);
    PM(16, SIZE_MAX);
    PM(SIZE_MAX / 2 + 1, 1);
    PM((size_t)1 << 62, 10);
    PM(4096, PTRDIFF_MAX);
    R(reallocarray(NULL, 0, 5));
    R(reallocarray(NULL, SIZE_MAX, 2));
    R(reallocarray(NULL, 2, SIZE_MAX / 2 + 1));
    R(realloc(NULL, SIZE_MAX));
    R(realloc(NULL, 0));
    {
        void *p = malloc(10);
        errno = 0;
        void *q = reallocarray(p, 0, 10);
        printf("reallocarray(p, 0, 10) -> %s, errno %d\n", q ? "object" : "NULL", errno);
        free(q);
    }
    realloc_fails(10, PTRDIFF_MAX, "small, PTRDIFF_MAX");
    realloc_fails(10, SIZE_MAX, "small, SIZE_MAX");
    realloc_fails(1 << 20, SIZE_MAX, "large, SIZE_MAX");
    realloc_fails(1 << 20, PTRDIFF_MAX, "large, PTRDIFF_MAX");
    realloc_fails(1 << 20, SIZE_MAX - 4096, "large, SIZE_MAX - 4096");
    /* Successful calls leave errno alone. */
    errno = 12345;
    void *a = malloc(100), *b = malloc(10 << 20), *c = calloc(10, 10), *d = memalign(64, 10);
    a = realloc(a, 5000);
    b = realloc(b, 20 << 20);
    free(a);
    free(b);
    free(c);
    free(d);
    free(NULL);
    printf("errno after successful calls: %s\n", errno == 12345 ? "unchanged" : "changed");
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
