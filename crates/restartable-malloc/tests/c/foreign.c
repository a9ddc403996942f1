/* Hands the allocator a pointer it did not hand out; the allocator must abort with a
 * message instead of corrupting its heap. usage: foreign CASE, or foreign CASE SIZE
 * FIRST N ALIGN BYTES for the cases around a span's first and last objects (objects
 * of SIZE bytes start FIRST bytes into their ALIGN-aligned spans of BYTES bytes, N
 * to a span, and no other object of a span starts FIRST bytes past a multiple of
 * ALIGN). */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char in_data[64];

/* The first object of a span of objects of `size` bytes (see the usage), found
 * among fresh objects; it is a live object: the allocator must accept it. */
static char *first_of_a_span(size_t size, size_t first, size_t span) {
    for (int i = 0; i < 4096; i++) {
        char *p = malloc(size);
        if (p == NULL) break;
        if (((uintptr_t)p - first) % span == 0) {
            if (malloc_usable_size(p) < size) {
                printf("malloc_usable_size of a span's first object: %zu\n",
                       malloc_usable_size(p));
                exit(3);
            }
            return p;
        }
    }
    printf("no span's first object among 4096 objects of %zu bytes\n", size);
    exit(3);
}

int main(int argc, char **argv) {
    if (argc == 7) {
        const char *c = argv[1];
        size_t size = strtoull(argv[2], NULL, 0), first = strtoull(argv[3], NULL, 0);
        size_t n = strtoull(argv[4], NULL, 0), align = strtoull(argv[5], NULL, 0);
        size_t bytes = strtoull(argv[6], NULL, 0);
        char *p = first_of_a_span(size, first, align), *start = p - first;
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
