/* Probe: what a per-CPU cache pays when threads change CPUs. churn.c's loop (each
 * thread keeps a window of 64 live objects of 16..256 random bytes, frees the oldest
 * and allocates a new one, touching its first byte and one of its last 8), with the
 * threads placed on purpose:
 *   free   no placement (as churn.c): the scheduler's.
 *   clean  thread i pinned to CPU i % ncpu from its start: with mm_cid (or CPU)
 *          indexed caches each thread keeps its cache, objects never cross.
 *   swap   as clean, then at half the pairs every thread moves to the next CPU: its
 *          64 live objects are freed into the other thread's former cache.
 *   share  every thread starts on CPU 0 (time-sliced, one cache), thread i > 0 moves
 *          to CPU i % ncpu after 1 M pairs: the start of an unpinned run where the
 *          second thread first runs on the first one's CPU.
 * Prints CPU ns per pair, aggregate and per thread (whole run, and from half the
 * pairs + 300 k on: after the move). With "check" it also records the objects each of
 * threads 0 and 1 allocates in its last 100 k pairs and prints how many cache lines
 * the bytes they touch share between the two (and how many of those pairs touched
 * one): the recording slows the loop, so "check" runs are for the mechanism, not the
 * timings. With "untouched" the loop never touches the objects (it sums their
 * addresses instead): the control, where objects still cross caches but no line is
 * written by both threads. BENCHMARKS.md, branch `churn2`.
 * usage: churn_mix THREADS PAIRS_PER_THREAD free|clean|swap|share [check|untouched] */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NREC 4096
#define TAIL 100000

enum mode { FREE, CLEAN, SWAP, SHARE };

struct rec {
    uintptr_t addr;
    size_t n;
    long uses;
};

static long pairs = 10000000;
static int ncpu;
static enum mode mode;
static int check, untouched;
static double cpu_all[256], cpu_after[256];
static struct rec recs[2][NREC];
static int nrec[2];

static void move_to(int cpu) {
    cpu_set_t cs;
    CPU_ZERO(&cs);
    CPU_SET(cpu, &cs);
    if (sched_setaffinity(0, sizeof cs, &cs) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static double ns_between(const struct timespec *a, const struct timespec *b) {
    return (b->tv_sec - a->tv_sec) * 1e9 + (b->tv_nsec - a->tv_nsec);
}

static void record(int me, char *p, size_t n) {
    int j;
    for (j = 0; j < nrec[me]; j++)
        if (recs[me][j].addr == (uintptr_t)p) break;
    if (j == NREC) return;
    if (j == nrec[me]) {
        recs[me][j].addr = (uintptr_t)p;
        recs[me][j].n = n;
        nrec[me]++;
    }
    recs[me][j].uses++;
}

static void *worker(void *arg) {
    int me = (int)(uintptr_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
    void *win[64] = {0};
    unsigned long sum = 0;
    long move_at = -1, mark = pairs / 2 + 300000;
    int move_cpu = 0;
    if (mode == SWAP) {
        move_at = pairs / 2;
        move_cpu = (me + 1) % ncpu;
    } else if (mode == SHARE && me > 0) {
        move_at = 1000000;
        move_cpu = me % ncpu;
    }
    struct timespec a, m = {0, 0}, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < pairs; i++) {
        if (__builtin_expect(i == move_at, 0)) move_to(move_cpu);
        if (__builtin_expect(i == mark, 0)) clock_gettime(CLOCK_THREAD_CPUTIME_ID, &m);
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned k = i & 63;
        free(win[k]);
        size_t n = 16 + (s & 0xf0);
        char *p = malloc(n);
        if (!p) abort();
        if (untouched) {
            sum += (uintptr_t)p >> 4;
        } else {
            p[0] = (char)i;
            sum += (unsigned char)p[n - 1 - (s & 7)];
        }
        win[k] = p;
        if (check && me < 2 && i >= pairs - TAIL) record(me, p, n);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    cpu_all[me] = ns_between(&a, &b) / pairs;
    cpu_after[me] = pairs > mark ? ns_between(&m, &b) / (pairs - mark) : 0;
    for (int k = 0; k < 64; k++) free(win[k]);
    return (void *)sum;
}

/* Cache lines holding a touched byte of the object: its first and its last 8. */
static int touched(const struct rec *r, uintptr_t *lines) {
    int k = 0;
    lines[k++] = r->addr >> 6;
    for (uintptr_t l = (r->addr + r->n - 8) >> 6; l <= (r->addr + r->n - 1) >> 6; l++)
        if (l != lines[0] && (k == 1 || l != lines[k - 1])) lines[k++] = l;
    return k;
}

static void report_sharing(void) {
    int shared = 0;
    long uses[2] = {0, 0};
    for (int x = 0; x < nrec[0]; x++) {
        uintptr_t lx[3];
        int kx = touched(&recs[0][x], lx);
        for (int y = 0; y < nrec[1]; y++) {
            uintptr_t ly[3];
            int ky = touched(&recs[1][y], ly), hit = 0;
            for (int i = 0; i < kx; i++)
                for (int j = 0; j < ky; j++) hit |= lx[i] == ly[j];
            if (hit) {
                shared++;
                uses[0] += recs[0][x].uses;
                uses[1] += recs[1][y].uses;
            }
        }
    }
    printf("  check: distinct objects in the last %d pairs: thread 0 %d, thread 1 %d; "
           "object pairs (one of each thread) with a touched line in common: %d, "
           "touched %ld and %ld times\n",
           TAIL, nrec[0], nrec[1], shared, uses[0], uses[1]);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) pairs = atol(argv[2]);
    const char *m = argc > 3 ? argv[3] : "clean";
    check = argc > 4 && strcmp(argv[4], "check") == 0;
    untouched = argc > 4 && strcmp(argv[4], "untouched") == 0;
    if (argc > 4 && !check && !untouched) threads = 0;
    ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (strcmp(m, "free") == 0)
        mode = FREE;
    else if (strcmp(m, "clean") == 0)
        mode = CLEAN;
    else if (strcmp(m, "swap") == 0)
        mode = SWAP;
    else if (strcmp(m, "share") == 0)
        mode = SHARE;
    else
        threads = 0;
    if (threads < 2 || threads > 256 || pairs < 2 * TAIL || ncpu < 2) {
        fprintf(stderr, "usage: churn_mix THREADS(>=2) PAIRS_PER_THREAD(>=%d) "
                        "free|clean|swap|share [check|untouched] (needs 2 CPUs)\n", 2 * TAIL);
        return 2;
    }
    pthread_t t[256];
    struct timespec ca, cb;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
    for (int i = 0; i < threads; i++) {
        pthread_attr_t at;
        cpu_set_t cs;
        pthread_attr_init(&at);
        CPU_ZERO(&cs);
        CPU_SET(mode == SHARE ? 0 : i % ncpu, &cs);
        if ((mode != FREE && pthread_attr_setaffinity_np(&at, sizeof cs, &cs) != 0) ||
            pthread_create(&t[i], &at, worker, (void *)(uintptr_t)i) != 0) {
            fprintf(stderr, "churn_mix: cannot start a pinned thread\n");
            return 1;
        }
        pthread_attr_destroy(&at);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
    printf("churn_mix %d threads %s%s: %.2f ns per pair CPU\n", threads, m,
           untouched ? " untouched" : "",
           ns_between(&ca, &cb) / ((double)pairs * threads));
    for (int i = 0; i < threads; i++)
        printf("  thread %d: %.2f ns per pair CPU, %.2f after the move\n", i, cpu_all[i],
               cpu_after[i]);
    if (check) report_sharing();
    return 0;
}
