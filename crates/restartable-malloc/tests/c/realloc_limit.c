/* realloc of a large object near an address-space limit (RLIMIT_AS): a 64 MiB object
 * grows to 1.5 GiB with room for the growth plus 1 MiB, then plus 3 MiB, each in a
 * child of its own. The grown object cannot stay in place (the address space above
 * it is taken), so it moves below, to a part of the address space where nothing was
 * allocated yet. Either it moves and keeps its contents, or realloc returns NULL with
 * ENOMEM and the object is intact; the child then frees it and allocates again. With
 * 3 MiB of room it must move (glibc needs none of it). Then a large object shrinks
 * with 1 MiB of room: in place. Last, a large object grows back into the address
 * space a shrink freed above it, with 1 MiB of room beyond the growth: in place
 * (mremap needs nothing else; glibc grows it there). Prints a fixed transcript;
 * exits non-zero if a check fails or a child dies. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checks.h"

/* In a child: the grow with `room` bytes beyond the growth; 0 when every check
 * passed, 1 when the object moved, 2 when realloc returned NULL (plus 4 on a failed
 * check). */
static int grow(size_t room) {
    size_t s1 = (size_t)64 << 20, s2 = (size_t)1536 << 20;
    unsigned char *a = malloc(s1);
    CHECK(a != NULL);
    fill(a, 4096, 3);
    fill(a + s1 - 4096, 4096, 5);
    limit_address_space((s2 - s1) + room);
    errno = 0;
    unsigned char *b = realloc(a, s2);
    int e = errno, moved = b != NULL;
    if (b) {
        CHECK(same(b, 4096, 3) && same(b + s1 - 4096, 4096, 5));
        b[s2 - 1] = 1;
        free(b);
    } else {
        CHECK(e == ENOMEM);
        CHECK(same(a, 4096, 3) && same(a + s1 - 4096, 4096, 5));
        free(a);
    }
    unsigned char *c = malloc(1 << 20);
    CHECK(c != NULL);
    free(c);
    return (moved ? 1 : 2) | (failures ? 4 : 0);
}

/* In a child: a 10 MiB object shrinks to 5 MiB with 1 MiB of room (less than
 * anything new could take): it succeeds in place, contents kept. Returns as grow(). */
static int shrink(void) {
    size_t s1 = (size_t)10 << 20, s2 = (size_t)5 << 20;
    unsigned char *a = malloc(s1);
    CHECK(a != NULL);
    fill(a, 4096, 3);
    fill(a + s2 - 4096, 4096, 5);
    limit_address_space((1 << 20));
    unsigned char *b = realloc(a, s2);
    CHECK(b == a);
    if (b) CHECK(same(b, 4096, 3) && same(b + s2 - 4096, 4096, 5));
    free(b ? b : a);
    return (b ? 1 : 2) | (failures ? 4 : 0);
}

/* In a child: a 128 MiB object shrinks to 64 MiB (in place), then, with room for
 * the growth plus 1 MiB, grows back to 128 MiB: the address space above it is free,
 * so it grows in place, contents kept. Returns as grow(). */
static int grow_in_place(void) {
    size_t s1 = (size_t)64 << 20, s2 = (size_t)128 << 20;
    (void)address_space(); /* the heap set up before the object */
    unsigned char *a = malloc(s2);
    CHECK(a != NULL);
    if (!a) return 2 | 4;
    fill(a, 4096, 3);
    fill(a + s1 - 4096, 4096, 5);
    CHECK(realloc(a, s1) == a);
    limit_address_space((s2 - s1) + (1 << 20));
    errno = 0;
    unsigned char *b = realloc(a, s2);
    if (!b) fprintf(stderr, "grow in place: NULL, errno %d\n", errno);
    CHECK(b == a);
    if (b) {
        CHECK(same(b, 4096, 3) && same(b + s1 - 4096, 4096, 5));
        b[s2 - 1] = 1;
    }
    free(b ? b : a);
    return (b == a ? 1 : 2) | (failures ? 4 : 0);
}

int main(void) {
    const size_t rooms[] = {1 << 20, 3 << 20, 0, 0};
    for (int i = 0; i < 4; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(i < 2 ? grow(rooms[i]) : i == 2 ? shrink() : grow_in_place());
        int st = 0;
        CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
        if (!WIFEXITED(st)) {
            printf("room %zu MiB: the child died (status %#x)\n", rooms[i] >> 20, st);
            failures++;
            continue;
        }
        int code = WEXITSTATUS(st);
        CHECK((code & 4) == 0);
        if (i >= 1) CHECK((code & 3) == 1);
        if (i == 2) {
            printf("shrinking with 1 MiB of room: in place, contents kept\n");
            continue;
        }
        if (i == 3) {
            printf("growing into free space above with 1 MiB of room: in place, contents kept\n");
            continue;
        }
        printf("room %zu MiB: the object %s\n", rooms[i] >> 20,
               i == 1 ? "moved and kept its contents" : "moved, or stayed intact");
    }
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
