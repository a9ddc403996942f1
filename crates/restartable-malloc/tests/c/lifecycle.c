/* Allocation at every stage of a process's life: ELF constructors (before main),
 * the dynamic loader (dlopen, dlsym, dlerror), thread creation (glibc's TLS and
 * stack set-up), thread-exit destructors (pthread keys, __cxa_thread_atexit_impl as
 * C++ thread_local uses), fork from a multi-threaded program (the child allocates,
 * also from a new thread), atexit handlers and ELF destructors (after main), with
 * other threads still allocating while the process exits.
 * Prints a fixed transcript; exits non-zero if a check fails.
 * A hang (a child of fork that waits for ever for an allocator lock no thread of
 * it holds: no progress, ever) is left to the test harness's time limit, which
 * kills the whole process group, children included; the transcript is flushed
 * before the forks so that the harness's report shows the stage reached. No alarm
 * of its own (as atfork_handlers.c): a slow, healthy child on a loaded machine
 * could reach it, and a stuck one is caught anyway. With LIFECYCLE_STUCK_CHILD set
 * (a test switch), the first child says "stuck child PID" and waits for ever. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checks.h"

extern int __cxa_thread_atexit_impl(void (*)(void *), void *, void *);
extern void *__dso_handle;

static char *from_ctor;

static void churn(unsigned seed, int rounds) {
    void *p[64] = {0};
    for (int i = 0; i < rounds; i++) {
        seed = seed * 1103515245 + 12345;
        int k = (seed >> 16) % 64;
        free(p[k]);
        size_t n = (seed >> 8) % ((seed & 1) ? 300 : 70000);
        p[k] = malloc(n);
        if (!p[k]) abort();
        memset(p[k], (int)k, n);
    }
    for (int k = 0; k < 64; k++) free(p[k]);
}

__attribute__((constructor(101))) static void early(void) {
    from_ctor = strdup("allocated in a constructor");
    churn(1, 1000);
}

__attribute__((destructor)) static void late(void) {
    churn(2, 1000);
    char *s = malloc(100);
    snprintf(s, 100, "ELF destructor: %s\n", from_ctor ? "ok" : "missing");
    fputs(s, stdout);
    fflush(stdout);
    free(s);
}

static void at_exit(void) {
    churn(3, 1000);
    printf("atexit handler: %s\n", from_ctor);
    free(from_ctor);
    from_ctor = strdup("reallocated in an atexit handler");
}

static pthread_key_t key;
static void key_dtor(void *v) {
    churn(4, 200);
    free(v);
}
static void tls_dtor(void *v) {
    churn(5, 200);
    char *s = realloc(v, 10000);
    free(s);
}

static void *thread_main(void *arg) {
    (void)arg;
    pthread_setspecific(key, malloc(1000));
    __cxa_thread_atexit_impl(tls_dtor, malloc(50), &__dso_handle);
    churn((unsigned)(uintptr_t)pthread_self(), 2000);
    return NULL;
}

static volatile int stop;
static void *busy(void *arg) {
    unsigned s = (unsigned)(uintptr_t)arg;
    while (!stop) churn(s++, 100);
    return NULL;
}

static void *child_thread(void *arg) {
    churn(7, 500);
    return arg;
}

int main(void) {
    CHECK(from_ctor && strcmp(from_ctor, "allocated in a constructor") == 0);
    atexit(at_exit);

    /* The dynamic loader allocates: dlopen, dlsym, and dlerror's message. */
    void *h = dlopen("libm.so.6", RTLD_NOW);
    CHECK(h != NULL);
    CHECK(dlsym(h, "cos") != NULL);
    CHECK(dlopen("libdoes-not-exist.so.7", RTLD_NOW) == NULL);
    char *err = dlerror();
    CHECK(err && strstr(err, "libdoes-not-exist"));
    dlclose(h);
    printf("dynamic loader: ok\n");

    /* Threads with exit-time destructors that allocate. */
    pthread_key_create(&key, key_dtor);
    for (int round = 0; round < 10; round++) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0);
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    }
    printf("thread destructors: ok\n");

    /* fork while other threads allocate; each child allocates, also from a thread. */
    fflush(stdout);
    pthread_t b[3];
    for (int i = 0; i < 3; i++) pthread_create(&b[i], NULL, busy, (void *)(uintptr_t)(100 * i));
    int children_ok = 0;
    int stuck = getenv("LIFECYCLE_STUCK_CHILD") != NULL;
    for (int i = 0; i < 40; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (stuck && i == 0) {
                char m[48];
                int n = snprintf(m, sizeof m, "stuck child %d\n", (int)getpid());
                (void)!write(1, m, (size_t)n);
                for (;;) pause();
            }
            churn(6, 3000);
            pthread_t t;
            void *r;
            if (pthread_create(&t, NULL, child_thread, (void *)42) != 0) _exit(3);
            pthread_join(t, &r);
            _exit(r == (void *)42 ? 0 : 4);
        }
        int st;
        CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) children_ok++;
        else fprintf(stderr, "child %d: status %#x\n", i, st);
    }
    printf("fork from a multi-threaded program: %d of 40 children ok\n", children_ok);
    CHECK(children_ok == 40);

    /* Exit with threads still allocating (detached), through atexit and destructors. */
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        pthread_create(&t, NULL, busy, (void *)(uintptr_t)(1000 + i));
        pthread_detach(t);
    }
    printf("main returns with %d failures\n", failures);
    fflush(stdout);
    return failures ? 1 : 0;
}
