/* Larson-like server workload: each of T threads owns a table of live blocks of
 * random sizes (16..1024 bytes) and repeatedly frees a random one and allocates a
 * replacement; after each round it hands its table to a new thread and exits, so
 * blocks are freed by threads other than the one that allocated them, and threads
 * are created and destroyed all along (as in Larson and Krishnan's benchmark).
 * Fixed work (not fixed time), so elapsed times compare.
 * usage: larson THREADS ROUNDS OPS_PER_ROUND BLOCKS_PER_THREAD */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One thread's state. Each sits on its own 128 bytes (two cache lines, so that the
 * adjacent-line prefetcher does not pair them either): the loop writes `seed` and
 * `check` on every operation, and states sharing a line would make the threads
 * fight over it. That false sharing cost every allocator more than its own work at
 * 2 threads (22-30 ns per pair against 9-12), and by an amount that depended on where
 * the allocator happened to place this one array. */
typedef struct {
    _Alignas(128) char **blocks;
    int nblocks;
    int rounds_left;
    long ops;
    uint64_t seed;
    unsigned long check;
} state_t;

static long ops_per_round = 100000;

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *round_main(void *arg) {
    state_t *st = arg;
    for (long i = 0; i < ops_per_round; i++) {
        uint64_t r = rnd(&st->seed);
        int k = (int)(r % st->nblocks);
        char *old = st->blocks[k];
        st->check += (unsigned char)old[0];
        free(old);
        size_t n = 16 + (r >> 32) % 1009;
        char *p = malloc(n);
        if (!p) abort();
        p[0] = (char)r;
        p[n - 1] = (char)(r >> 8);
        st->blocks[k] = p;
    }
    st->ops += ops_per_round;
    if (--st->rounds_left > 0) {
        /* The successor thread frees what this one allocated. */
        pthread_t next;
        if (pthread_create(&next, NULL, round_main, st) != 0) abort();
        pthread_detach(next);
        return NULL;
    }
    return st;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: larson THREADS ROUNDS OPS_PER_ROUND BLOCKS_PER_THREAD\n");
        return 2;
    }
    int threads = atoi(argv[1]), rounds = atoi(argv[2]), blocks = atoi(argv[4]);
    ops_per_round = atol(argv[3]);
    if (threads < 1 || threads > 256 || rounds < 1 || ops_per_round < 1 || blocks < 1) return 2;
    state_t *st = aligned_alloc(_Alignof(state_t), threads * sizeof *st);
    if (!st) abort();
    memset(st, 0, threads * sizeof *st);
    struct timespec a, b, ca, cb;
    for (int t = 0; t < threads; t++) {
        st[t].nblocks = blocks;
        st[t].rounds_left = rounds;
        st[t].seed = 0x9e3779b97f4a7c15ull * (t + 1);
        st[t].blocks = malloc(blocks * sizeof(char *));
        for (int i = 0; i < blocks; i++) {
            size_t n = 16 + rnd(&st[t].seed) % 1009;
            st[t].blocks[i] = malloc(n);
            memset(st[t].blocks[i], 1, n);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
    volatile int done = 0;
    (void)done;
    pthread_t th[256];
    for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, round_main, &st[t]);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    /* The first thread of each chain was joined; wait for the chains to finish. */
    for (;;) {
        int busy = 0;
        for (int t = 0; t < threads; t++)
            if (__atomic_load_n(&st[t].rounds_left, __ATOMIC_ACQUIRE) > 0) busy = 1;
        if (!busy) break;
        struct timespec w = {0, 100000};
        nanosleep(&w, NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
    long ops = 0;
    unsigned long check = 0;
    for (int t = 0; t < threads; t++) {
        ops += (long)rounds * ops_per_round;
        check += st[t].check & 1;
        for (int i = 0; i < blocks; i++) free(st[t].blocks[i]);
        free(st[t].blocks);
    }
    free(st);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    double cpu = (cb.tv_sec - ca.tv_sec) * 1e9 + (cb.tv_nsec - ca.tv_nsec);
    printf("larson %d threads: %ld free+malloc pairs, %.2f ns per pair elapsed (x threads), %.2f ns per pair CPU\n",
           threads, ops, ns * threads / ops, cpu / ops);
    return 0;
}
