/* fork from a program whose threads hold the allocator's locks often: one thread
 * calls malloc_trim and mallinfo2 in a loop (draining every per-CPU cache: the drain
 * lock, each slot stopped and fenced, the transfer caches and the page heap), three
 * churn small and large objects with reallocs. The main thread forks N times; each
 * child allocates, frees and trims, starts a thread that churns, and exits 0.
 *
 * A child stuck (on a lock inherited held, say) is told from a slow one by its
 * progress, not by the time it takes: each child counts its steps (every malloc,
 * free, trim, and the churn of its thread) in memory it shares with the parent, and
 * says which stage it is in. The parent waits as long as the child keeps counting;
 * a child whose count stays the same for STUCK seconds (a heavily loaded machine
 * still runs a runnable process many times a second) is stuck: the parent prints
 * its stage and step, every thread's stack (gdb -batch, if installed), kills it,
 * forks no more, and the program fails. A child dies with the parent
 * (PR_SET_PDEATHSIG), so a parent killed by the harness leaves none behind. A child
 * that kept stepping for ever would be waited for until the harness kills the
 * program (none can: its every loop ends).
 *
 * usage: fork_trim N [STUCK] [hang]: N children (100), a child stuck after STUCK
 * seconds without a step (60); `hang` makes every child stop counting and wait for
 * ever after its first round (to check this report: the child is named stuck, in
 * `hang_here`; the parent starts counting STUCK only once the child is there, so
 * that a slow step before it is never taken for the hang). Prints a fixed
 * transcript; exits non-zero if a child failed. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checks.h"

static volatile int stop;

/* Where a child is, in memory the parent shares (mapped before any fork). */
struct progress {
    unsigned long steps; /* bumped by the child's every step (atomically) */
    int stage;           /* one of `stages` */
    int round;           /* the allocation round, 0..19 */
};
static struct progress *shared;
static const char *const stages[] = {
    "forked",  "allocating", "freeing",       "trimming", "starting a thread",
    "sleeping", "joining",   "exiting",       "hanging (asked)",
};
/* Set in a child only (its own copy): its churn thread counts steps too. */
static int in_child;

static void step(void) {
    if (in_child) __atomic_add_fetch(&shared->steps, 1, __ATOMIC_RELAXED);
}
static void set_stage(int s) { __atomic_store_n(&shared->stage, s, __ATOMIC_RELAXED); }

static void *trimmer(void *a) {
    (void)a;
    while (!stop) {
        malloc_trim(0);
        struct mallinfo2 m = mallinfo2();
        (void)m;
    }
    return NULL;
}

static void *churn(void *a) {
    unsigned s = (unsigned)(uintptr_t)a;
    void *p[64] = {0};
    while (!stop) {
        s = s * 1103515245 + 12345;
        int k = (s >> 16) % 64;
        free(p[k]);
        size_t n = (s >> 4) % ((s & 3) == 0 ? 600000 : 3000);
        p[k] = malloc(n);
        if (!p[k]) abort();
        memset(p[k], k, n < 64 ? n : 64);
        if ((s & 255) == 7) {
            void *q = realloc(p[k], n * 2 + 1);
            if (q) p[k] = q;
        }
        step();
    }
    for (int k = 0; k < 64; k++) free(p[k]);
    return NULL;
}

/* A child asked to hang waits here for ever (its stack names it). */
__attribute__((noinline)) static void hang_here(void) {
    set_stage(8);
    for (;;) pause();
}

static void child(pid_t parent, int hang) {
    in_child = 1;
    /* Killed with the parent; gdb may attach even where Yama allows only ancestors
     * (from here on: not to a child stuck in a fork handler, before this line). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(5);
    (void)prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    void *p[100];
    for (int r = 0; r < 20; r++) {
        __atomic_store_n(&shared->round, r, __ATOMIC_RELAXED);
        set_stage(1);
        for (int k = 0; k < 100; k++) {
            p[k] = malloc((k * 7919) % (k & 1 ? 500000 : 4000));
            if (!p[k]) _exit(3);
            step();
        }
        set_stage(2);
        for (int k = 0; k < 100; k++) {
            free(p[k]);
            step();
        }
        set_stage(3);
        malloc_trim(0);
        step();
        if (hang) hang_here();
    }
    set_stage(4);
    pthread_t c;
    if (pthread_create(&c, NULL, churn, (void *)9) != 0) _exit(4);
    step();
    set_stage(5);
    usleep(1000);
    stop = 1;
    set_stage(6);
    pthread_join(c, NULL);
    set_stage(7);
    step();
    _exit(0);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Reports child `i` (pid `pid`) stuck: where it is, and every thread's stack. */
static void report_stuck(int i, pid_t pid, double secs) {
    int stage = __atomic_load_n(&shared->stage, __ATOMIC_RELAXED);
    fprintf(stderr,
            "child %d (pid %d) is stuck: no step for %.0f s, %s in round %d after %lu "
            "steps; its threads' stacks:\n",
            i, (int)pid, secs, stages[stage],
            __atomic_load_n(&shared->round, __ATOMIC_RELAXED),
            __atomic_load_n(&shared->steps, __ATOMIC_RELAXED));
    fflush(stderr);
    char cmd[512];
    /* Without the preloaded allocator (gdb is not under test), bounded, no debuginfod
     * downloads. */
    snprintf(cmd, sizeof cmd,
             "if command -v gdb >/dev/null; then env -u LD_PRELOAD timeout -k 10 120 "
             "gdb -nx -batch -iex 'set debuginfod enabled off' -p %d "
             "-ex 'thread apply all bt' </dev/null 1>&2; "
             "else echo 'gdb is not installed: no stacks' 1>&2; fi",
             (int)pid);
    if (system(cmd) != 0) fprintf(stderr, "(gdb failed)\n");
}

/* Waits for child `i`; returns 0 (and kills it) if it is stuck. With `hang`, the
 * time without a step counts only once the child is in `hang_here`. */
static int wait_child(int i, pid_t pid, double stuck, int hang, int *st) {
    unsigned long last = __atomic_load_n(&shared->steps, __ATOMIC_RELAXED);
    double since = now();
    long nap = 20000; /* ns, doubled up to 10 ms */
    for (;;) {
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w == pid) return 1;
        if (w != 0) {
            perror("waitpid");
            exit(2);
        }
        unsigned long steps = __atomic_load_n(&shared->steps, __ATOMIC_RELAXED);
        double t = now();
        int hanging = __atomic_load_n(&shared->stage, __ATOMIC_RELAXED) == 8;
        if (steps != last || (hang && !hanging)) {
            last = steps;
            since = t;
        } else if (t - since >= stuck) {
            report_stuck(i, pid, t - since);
            kill(pid, SIGKILL);
            if (waitpid(pid, st, 0) != pid) perror("waitpid");
            return 0;
        }
        struct timespec d = {0, nap};
        nanosleep(&d, NULL);
        if (nap < 10000000) nap *= 2;
    }
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 100;
    double stuck = argc > 2 ? atof(argv[2]) : 60;
    int hang = argc > 3 && strcmp(argv[3], "hang") == 0;
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                  -1, 0);
    CHECK(shared != MAP_FAILED);
    if (shared == MAP_FAILED) return 1;
    pid_t parent = getpid();
    pthread_t t[4];
    CHECK(pthread_create(&t[0], NULL, trimmer, NULL) == 0);
    for (int i = 1; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i) == 0);
    int ok = 0;
    for (int i = 0; i < forks; i++) {
        shared->steps = 0;
        shared->stage = 0;
        shared->round = 0;
        pid_t pid = fork();
        if (pid == 0) child(parent, hang);
        CHECK(pid > 0);
        if (pid < 0) break;
        int st = 0;
        if (!wait_child(i, pid, stuck, hang, &st)) {
            fprintf(stderr, "child %d killed; no more forks\n", i);
            break;
        }
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            ok++;
        else
            fprintf(stderr, "child %d: status %#x\n", i, st);
    }
    stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("%d of %d children ok\n", ok, forks);
    CHECK(ok == forks);
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
