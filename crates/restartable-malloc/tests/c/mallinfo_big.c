/* mallinfo with more than INT_MAX bytes held: three objects of 1 GiB (never touched,
 * so they take address space, not memory). mallinfo2's hblkhd counts them (both
 * allocators map such objects directly); with the argument "saturates" (this
 * library's documented behaviour; glibc's mallinfo truncates), every mallinfo field
 * is in [0, INT_MAX] and hblkhd is INT_MAX. Prints a fixed transcript; exits
 * non-zero if a check fails. */
#define _GNU_SOURCE
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* mallinfo */

#include "checks.h"

int main(int argc, char **argv) {
    int saturates = argc > 1 && strcmp(argv[1], "saturates") == 0;
    void *big[3];
    for (int i = 0; i < 3; i++) {
        big[i] = malloc((size_t)1 << 30);
        CHECK(big[i] != NULL);
    }
    /* Back to back: nothing allocates between them. */
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m = mallinfo();
    CHECK(m2.hblkhd >= (size_t)3 << 30);
    printf("mallinfo2: hblkhd counts 3 GiB\n");
    if (saturates) {
        int f[] = {m.arena, m.ordblks, m.smblks, m.hblks, m.hblkhd,
                   m.usmblks, m.fsmblks, m.uordblks, m.fordblks, m.keepcost};
        for (int i = 0; i < 10; i++) CHECK(f[i] >= 0);
        CHECK(m.hblkhd == INT_MAX);
        CHECK((size_t)m.uordblks == (m2.uordblks > INT_MAX ? INT_MAX : m2.uordblks));
        printf("mallinfo: saturated at INT_MAX\n");
    }
    for (int i = 0; i < 3; i++) free(big[i]);
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
