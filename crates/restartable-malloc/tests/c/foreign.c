/* Hands the allocator a pointer it did not hand out; the allocator must abort with a
 * message instead of corrupting its heap. usage: foreign CASE, or foreign CASE SIZE
 * UNIT N ALIGN BYTES MAXHEAD for the cases around a span's first and last objects
 * (objects of SIZE bytes, N to a span, start FIRST bytes into their ALIGN-aligned
 * spans of BYTES bytes, FIRST the span's colour: an odd multiple of UNIT, at most
 * MAXHEAD). */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char in_data[64];

/* Whether `p` is one of the `count` pointers in `ps`. */
static int among(char **ps, int count, const char *p) {
    for (int i = 0; i < count; i++)
        if (ps[i] == p) return 1;
    return 0;
}

/* The first object of a span of objects of `size` bytes (see the usage), found
 * among 256 fresh objects, and in `*first` its offset in its span; a live object:
 * the allocator must accept it. It is the object whose offset in its page is one of
 * the colours and whose span's other `n - 1` objects follow it `size` bytes apart:
 * no later object of a span is followed so (that would take the next span's
 * objects to continue its stride, `BYTES - n * SIZE` bytes past the span's end
 * more than any head). */
static char *first_of_a_span(size_t size, size_t unit, size_t n, size_t align,
                             size_t maxhead, size_t *first) {
    static char *ps[256];
    int count = 0;
    while (count < 256 && (ps[count] = malloc(size)) != NULL) count++;
    for (int i = 0; i < count; i++) {
        char *p = ps[i];
        size_t head = (uintptr_t)p % align, k = 1;
        if (head % (2 * unit) != unit || head > maxhead) continue;
        while (k < n && among(ps, count, p + k * size)) k++;
        if (k < n) continue;
        if (malloc_usable_size(p) < size) {
            printf("malloc_usable_size of a span's first object: %zu\n",
                   malloc_usable_size(p));
            exit(3);
        }
        *first = head;
        return p;
    }
    printf("no span's first object among %d objects of %zu bytes\n", count, size);
    exit(3);
}

int main(int argc, char **argv) {
    if (argc == 8) {
        const char *c = argv[1];
        size_t size = strtoull(argv[2], NULL, 0), unit = strtoull(argv[3], NULL, 0);
        size_t n = strtoull(argv[4], NULL, 0), align = strtoull(argv[5], NULL, 0);
        size_t bytes = strtoull(argv[6], NULL, 0), maxhead = strtoull(argv[7], NULL, 0);
        size_t first;
        char *p = first_of_a_span(size, unit, n, align, maxhead, &first), *start = p - first;
        char *tail = p + n * size;
        if (!strcmp(c, "span-start")) free(start);
        else if (!strcmp(c, "span-head")) free(start + 16);
        else if (!strcmp(c, "span-head-last")) free(p - 1);
        else if (!strcmp(c, "span-tail")) free(tail);
        else if (!strcmp(c, "span-tail-last")) free(start + bytes - 16);
        else if (!strcmp(c, "before-span")) free(start - 1);
        else if (!strcmp(c, "span-head-realloc")) (void)realloc(start + first / 2, 10);
        else if (!strcmp(c, "span-head-usable-size"))
            printf("%zu\n", malloc_usable_size(start));
        else return 2;
        printf("the allocator accepted a foreign pointer (%s)\n", c);
        return 0;
    }
    if (argc != 2) return 2;
    const char *c = argv[1];
    char on_stack[64];
    char *small = malloc(100), *large = malloc(1 << 20);
    if (!strcmp(c, "stack")) free(on_stack + 16);
    else if (!strcmp(c, "data")) free(in_data);
    else if (!strcmp(c, "interior")) free(small + 16);
    else if (!strcmp(c, "large-interior")) free(large + 4096);
    else if (!strcmp(c, "realloc")) (void)realloc(in_data, 10);
    else if (!strcmp(c, "usable-size")) printf("%zu\n", malloc_usable_size(small + 1));
    else if (!strcmp(c, "freed-large")) { free(large); free(large); }
    else return 2;
    printf("the allocator accepted a foreign pointer (%s)\n", c);
    return 0;
}
