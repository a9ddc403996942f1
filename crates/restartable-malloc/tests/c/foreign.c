/* Hands the allocator a pointer it did not hand out; the allocator must abort with a
 * message instead of corrupting its heap. usage: foreign CASE */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char in_data[64];

int main(int argc, char **argv) {
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
