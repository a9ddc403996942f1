/* Compiled by gcc under LD_PRELOAD, then run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry { char *key; int value; struct entry *next; };
#define BUCKETS 4099
static struct entry *table[BUCKETS];

static unsigned hash(const char *s) {
    unsigned h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h % BUCKETS;
}

static void put(const char *k, int v) {
    unsigned h = hash(k);
    for (struct entry *e = table[h]; e; e = e->next)
        if (!strcmp(e->key, k)) { e->value += v; return; }
    struct entry *e = malloc(sizeof *e);
    e->key = strdup(k);
    e->value = v;
    e->next = table[h];
    table[h] = e;
}

static int cmp(const void *a, const void *b) {
    const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
    return x->value != y->value ? (y->value > x->value) - (y->value < x->value) : strcmp(x->key, y->key);
}

int main(void) {
    char buf[64];
    for (int i = 0; i < 300000; i++) {
        snprintf(buf, sizeof buf, "w%d", (int)((i * 7919LL) % 20011));
        put(buf, i % 13);
    }
    size_t n = 0;
    for (int b = 0; b < BUCKETS; b++) for (struct entry *e = table[b]; e; e = e->next) n++;
    struct entry **all = malloc(n * sizeof *all);
    size_t k = 0;
    for (int b = 0; b < BUCKETS; b++) for (struct entry *e = table[b]; e; e = e->next) all[k++] = e;
    qsort(all, n, sizeof *all, cmp);
    printf("%zu keys; top %s=%d %s=%d; last %s=%d\n", n, all[0]->key, all[0]->value, all[1]->key,
           all[1]->value, all[n - 1]->key, all[n - 1]->value);
    for (size_t i = 0; i < n; i++) { free(all[i]->key); free(all[i]); }
    free(all);
    return 0;
}
