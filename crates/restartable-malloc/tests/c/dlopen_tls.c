/* dlopen/dlclose of a plugin with thread-local storage while a thread uses it:
 * glibc allocates the thread's block of the plugin's TLS with malloc and frees it in
 * __tls_get_addr's next DTV update, which the allocator's own thread-local accesses
 * trigger (a Rust cdylib reaches its thread-locals through __tls_get_addr).
 * usage: dlopen_tls PLUGIN.so */
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sem_t go, done;
static int (*touch)(void);

static void *worker(void *a) {
    for (int round = 0; round < 50; round++) {
        sem_wait(&go);
        if (touch() != 1) abort(); /* a fresh block each time the plugin is loaded */
        sem_post(&done);
        sem_wait(&go); /* the plugin was closed: the next TLS access updates the DTV */
        void *p[100];
        for (int i = 0; i < 100; i++) memset(p[i] = malloc(100 + 1000 * i), i, 100);
        for (int i = 0; i < 100; i++) free(p[i]);
        sem_post(&done);
    }
    return a;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    sem_init(&go, 0, 0);
    sem_init(&done, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    for (int round = 0; round < 50; round++) {
        void *h = dlopen(argv[1], RTLD_NOW);
        if (!h) {
            printf("%s\n", dlerror());
            return 1;
        }
        touch = (int (*)(void))dlsym(h, "touch");
        sem_post(&go);
        sem_wait(&done);
        dlclose(h);
        sem_post(&go);
        sem_wait(&done);
    }
    pthread_join(t, NULL);
    printf("50 rounds of dlopen, thread-local use and dlclose: ok\n");
    return 0;
}
