/* fork from a program whose threads hold the allocator's locks often: one thread
 * calls malloc_trim and mallinfo2 in a loop (draining every per-CPU cache: the drain
 * lock, each slot stopped and fenced, the transfer caches and the page heap), three
 * churn small and large objects with reallocs. The main thread forks N times; each
 * child allocates, frees and trims, starts a thread that churns, and exits 0; a
 * child stuck on a lock inherited held is killed by its alarm after 10 seconds.
 * usage: fork_trim N. Prints a fixed transcript; exits non-zero if a child failed. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checks.h"

static volatile int stop;

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
    }
    for (int k = 0; k < 64; k++) free(p[k]);
    return NULL;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 100;
    pthread_t t[4];
    CHECK(pthread_create(&t[0], NULL, trimmer, NULL) == 0);
    for (int i = 1; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i) == 0);
    int ok = 0;
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(10);
            void *p[100];
            for (int r = 0; r < 20; r++) {
                for (int k = 0; k < 100; k++) {
                    p[k] = malloc((k * 7919) % (k & 1 ? 500000 : 4000));
                    if (!p[k]) _exit(3);
                }
                for (int k = 0; k < 100; k++) free(p[k]);
                malloc_trim(0);
            }
            pthread_t c;
            if (pthread_create(&c, NULL, churn, (void *)9) != 0) _exit(4);
            usleep(1000);
            stop = 1;
            pthread_join(c, NULL);
            _exit(0);
        }
        int st = 0;
        CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
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
