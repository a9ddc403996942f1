/* Shared by the C test programs: CHECK counts failed checks (the program prints
 * "all checks passed" when `failures` is 0), fill/same write and verify a pattern
 * derived from a seed, address_space/limit_address_space/unlimit_address_space read
 * the address space and set RLIMIT_AS's soft limit. */
#ifndef RESTARTABLE_MALLOC_TEST_CHECKS_H
#define RESTARTABLE_MALLOC_TEST_CHECKS_H

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

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

/* Bytes of address space mapped now (the first field of /proc/self/statm, in
 * pages), read without stdio: nothing allocated. */
static inline size_t address_space(void) {
    char buf[64];
    int fd = open("/proc/self/statm", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) abort();
    size_t pages = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        pages = pages * 10 + (size_t)(buf[i] - '0');
    return pages * 4096;
}

/* RLIMIT_AS's soft limit at the address space mapped now plus `room` bytes (the
 * hard limit unchanged: unlimit_address_space raises it back). */
static inline void limit_address_space(size_t room) {
    struct rlimit r;
    CHECK(getrlimit(RLIMIT_AS, &r) == 0);
    r.rlim_cur = address_space() + room;
    CHECK(setrlimit(RLIMIT_AS, &r) == 0);
}

/* RLIMIT_AS's soft limit back at the hard limit. */
static inline void unlimit_address_space(void) {
    struct rlimit r;
    CHECK(getrlimit(RLIMIT_AS, &r) == 0);
    r.rlim_cur = r.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &r) == 0);
}

#endif
