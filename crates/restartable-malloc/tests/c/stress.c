/* A threaded allocator stress test: random sizes (mostly small, some large), every
 * object filled with a pattern derived from its id and checked before it is freed,
 * half of the objects freed by another thread (handed over through mailboxes),
 * realloc/calloc/posix_memalign in the mix. Prints totals that do not depend on the
 * allocator or the schedule; exits 1 on any corrupted object.
 *
 * With a third argument "trim", another thread calls malloc_trim (pad 0, sometimes
 * 1 MiB) and reads mallinfo2 in a loop while the workers run: every cached object
 * and free page given back under their feet; the counts printed stay the same.
 *
 * usage: stress [threads] [operations per thread] [trim] */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t id;
    size_t len;
    /* pattern bytes follow */
} obj_t;

enum { MAILBOX = 1024, LOCAL = 512 };

typedef struct {
    pthread_mutex_t lock;
    obj_t *items[MAILBOX];
    int n;
} mailbox_t;

static int nthreads = 4;
static long nops = 200000;
static mailbox_t *boxes;
static uint64_t allocated[64], freed[64], bad[64];
static volatile int workers_done;

/* Trims in a loop until the workers are done (at least once); counts on stderr. */
static void *trimmer(void *arg) {
    (void)arg;
    unsigned long trims = 0, released = 0;
    do {
        released += malloc_trim(trims % 4 == 3 ? 1 << 20 : 0);
        struct mallinfo2 mi = mallinfo2();
        if (mi.fsmblks > mi.fordblks) {
            fprintf(stderr, "mallinfo2: fsmblks %zu > fordblks %zu\n", mi.fsmblks, mi.fordblks);
            exit(3);
        }
        trims++;
    } while (!__atomic_load_n(&workers_done, __ATOMIC_ACQUIRE));
    fprintf(stderr, "malloc_trim called %lu times, %lu released memory\n", trims, released);
    return NULL;
}

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static unsigned char pat(uint64_t id, size_t i) { return (unsigned char)(id * 131 + i * 7); }

static size_t pick_size(uint64_t r) {
    unsigned k = r % 1000;
    if (k < 700) return sizeof(obj_t) + (r >> 10) % 128;
    if (k < 950) return sizeof(obj_t) + (r >> 10) % 4096;
    if (k < 998) return sizeof(obj_t) + (r >> 10) % 100000;
    return sizeof(obj_t) + (r >> 10) % 1500000;
}

static obj_t *make(uint64_t id, uint64_t r, int t) {
    size_t n = pick_size(r);
    obj_t *o;
    switch (r % 16) {
    case 0:
        o = calloc(1, n);
        if (o) for (size_t i = sizeof(obj_t); i < n; i++) if (((unsigned char *)o)[i]) bad[t]++;
        break;
    case 1: {
        void *q = NULL;
        size_t al = (size_t)16 << ((r >> 4) % 10);
        o = posix_memalign(&q, al, n) == 0 ? q : NULL;
        if (o && ((uintptr_t)o & (al - 1))) bad[t]++;
        break;
    }
    default:
        o = malloc(n);
    }
    if (!o) { fprintf(stderr, "allocation of %zu bytes failed\n", n); exit(2); }
    if (malloc_usable_size(o) < n) bad[t]++;
    o->id = id;
    o->len = n;
    unsigned char *b = (unsigned char *)(o + 1);
    /* Large objects: pattern on the first and last 4 KiB only (keeps it fast). */
    for (size_t i = 0; i < n - sizeof(obj_t); i++) {
        if (i == 4096 && n - sizeof(obj_t) > 8192) i = n - sizeof(obj_t) - 4096;
        b[i] = pat(id, i);
    }
    allocated[t]++;
    return o;
}

static int intact(obj_t *o) {
    size_t m = o->len - sizeof(obj_t);
    unsigned char *b = (unsigned char *)(o + 1);
    for (size_t i = 0; i < m; i++) {
        if (i == 4096 && m > 8192) i = m - 4096;
        if (b[i] != pat(o->id, i)) return 0;
    }
    return 1;
}

static void destroy(obj_t *o, int t) {
    if (!intact(o)) bad[t]++;
    memset(o, 0xdd, sizeof(obj_t));
    free(o);
    freed[t]++;
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * (t + 1);
    obj_t *local[LOCAL] = {0};
    uint64_t id = (uint64_t)t << 40;
    mailbox_t *out = &boxes[(t + 1) % nthreads], *in = &boxes[t];
    for (long op = 0; op < nops; op++) {
        uint64_t r = next_rand(&s);
        int slot = (int)((r >> 20) % LOCAL);
        if (local[slot]) {
            obj_t *o = local[slot];
            local[slot] = NULL;
            if ((r >> 32) % 4 == 0) {
                /* realloc, keeping the pattern of the kept prefix */
                if (!intact(o)) bad[t]++;
                size_t n = pick_size(r >> 3);
                obj_t *q = realloc(o, n);
                if (!q) { fprintf(stderr, "realloc failed\n"); exit(2); }
                size_t keep = q->len < n ? q->len : n;
                if (keep > sizeof(obj_t) + 4096) keep = sizeof(obj_t) + 4096;
                q->len = keep; /* the kept prefix's first 4 KiB (patterned throughout) */
                if (!intact(q)) bad[t]++;
                q->len = n;
                unsigned char *b = (unsigned char *)(q + 1);
                for (size_t i = 0; i < n - sizeof(obj_t); i++) {
                    if (i == 4096 && n - sizeof(obj_t) > 8192) i = n - sizeof(obj_t) - 4096;
                    b[i] = pat(q->id, i);
                }
                local[slot] = q;
            } else if ((r >> 32) % 2 == 0) {
                destroy(o, t);
            } else {
                /* hand it to the next thread */
                pthread_mutex_lock(&out->lock);
                if (out->n < MAILBOX) {
                    out->items[out->n++] = o;
                    o = NULL;
                }
                pthread_mutex_unlock(&out->lock);
                if (o) destroy(o, t);
            }
        } else {
            local[slot] = make(id++, r, t);
        }
        if (op % 64 == 0) {
            obj_t *got[MAILBOX];
            int k;
            pthread_mutex_lock(&in->lock);
            k = in->n;
            memcpy(got, in->items, k * sizeof *got);
            in->n = 0;
            pthread_mutex_unlock(&in->lock);
            for (int i = 0; i < k; i++) destroy(got[i], t);
        }
    }
    for (int i = 0; i < LOCAL; i++)
        if (local[i]) destroy(local[i], t);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) nthreads = atoi(argv[1]);
    if (argc > 2) nops = atol(argv[2]);
    int trim = argc > 3 && strcmp(argv[3], "trim") == 0;
    if (nthreads < 1 || nthreads > 64 || nops < 1 || (argc > 3 && !trim)) {
        fprintf(stderr, "usage: stress [threads 1-64] [operations per thread] [trim]\n");
        return 2;
    }
    boxes = calloc(nthreads, sizeof *boxes);
    for (int i = 0; i < nthreads; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    pthread_t th[64];
    for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    pthread_t tt;
    if (trim) pthread_create(&tt, NULL, trimmer, NULL);
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    __atomic_store_n(&workers_done, 1, __ATOMIC_RELEASE);
    if (trim) pthread_join(tt, NULL);
    uint64_t a = 0, f = 0, b = 0;
    for (int i = 0; i < nthreads; i++) {
        for (int k = 0; k < boxes[i].n; k++) destroy(boxes[i].items[k], i);
        a += allocated[i];
        f += freed[i];
        b += bad[i];
    }
    free(boxes);
    printf("threads %d, operations %ld: allocated %llu, freed %llu, corrupted %llu\n", nthreads,
           nops, (unsigned long long)a, (unsigned long long)f, (unsigned long long)b);
    return (a == f && b == 0) ? 0 : 1;
}
