/* Shared by the C test programs: CHECK counts failed checks (the program prints
 * "all checks passed" when `failures` is 0), fill/same write and verify a pattern
 * derived from a seed. */
#ifndef RESTARTABLE_MALLOC_TEST_CHECKS_H
#define RESTARTABLE_MALLOC_TEST_CHECKS_H

#include <stddef.h>
#include <stdio.h>

static int failures;
#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #c);      \
            failures++;                                                            \
        }                                                                          \
    } while (0)

static inline void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 31);
}
static inline int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 31)) return 0;
    return 1;
}

#endif
