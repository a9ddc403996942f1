/* Allocator churn: each thread allocates and frees small objects of random sizes
 * (16..256 bytes) in a tight loop, keeping a window of 64 live objects (the oldest is
 * freed when a new one comes), touching one byte of each. Prints the aggregate
 * nanoseconds per malloc+free pair (elapsed x threads / pairs, and CPU time / pairs). usage: churn THREADS PAIRS_PER_THREAD */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long pairs = 10000000;

static void *worker(void *arg) {
    uint64_t s = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
    void *win[64] = {0};
    unsigned long sum = 0;
    for (long i = 0; i < pairs; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned k = i & 63;
        free(win[k]);
        size_t n = 16 + (s & 0xf0);
        char *p = malloc(n);
        if (!p) abort();
        p[0] = (char)i;
        sum += (unsigned char)p[n - 1 - (s & 7)];
        win[k] = p;
    }
    for (int k = 0; k < 64; k++) free(win[k]);
    return (void *)sum;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) pairs = atol(argv[2]);
    if (threads < 1 || threads > 256 || pairs < 1) {
        fprintf(stderr, "usage: churn THREADS PAIRS_PER_THREAD\n");
        return 2;
    }
    pthread_t t[256];
    struct timespec a, b, ca, cb;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    double cpu = (cb.tv_sec - ca.tv_sec) * 1e9 + (cb.tv_nsec - ca.tv_nsec);
    double n = (double)pairs * threads;
    /* Aggregate: elapsed time x threads / pairs, and CPU time of all threads / pairs. */
    printf("churn %d threads: %.2f ns per pair elapsed, %.2f ns per pair CPU\n", threads,
           ns * threads / n, cpu / n);
    return 0;
}
