/* pthread_atfork handlers of the program that allocate, registered before the
 * program's first allocation. glibc runs the prepare handlers in the reverse order
 * of their registration, the parent and child ones in that order: an allocator that
 * registered its own handlers lazily (at its first lock, after the program's) would
 * take every one of its locks before the program's prepare handler runs, and release
 * them only after the program's parent and child handlers: their allocations (a size
 * class of their own, so the per-CPU cache is empty and the central list's lock is
 * needed) would wait for ever for a lock their own thread holds. Registered when
 * the library is loaded, the allocator's handlers run innermost. A stuck process
 * (its own thread holding the lock it waits for: no progress, ever) is killed by the
 * test harness's time limit, which a slow run on a loaded machine stays far below;
 * no alarm of its own (10 seconds could be reached by a slow, healthy run). Prints a
 * fixed transcript. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *in_prepare, *in_parent, *in_child;

/* Sizes no other allocation of this program uses. */
static void prepare(void) { in_prepare = malloc(5000); }
static void parent(void) { in_parent = malloc(9000); }
static void child(void) { in_child = malloc(13000); }

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

int main(void) {
    if (pthread_atfork(prepare, parent, child) != 0) return 2;
    /* The first allocation of the program, after its handlers are registered. */
    void *first = malloc(16);
    if (!first) return 3;
    pid_t pid = fork();
    if (pid < 0) return 4;
    if (pid == 0) {
        int ok = in_prepare && in_child && !in_parent;
        void *p = malloc(1000);
        ok = ok && p;
        free(p);
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 5;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        say("child failed\n");
        return 6;
    }
    if (!in_prepare || !in_parent || in_child) {
        say("parent's handlers did not allocate\n");
        return 7;
    }
    free(in_prepare);
    free(in_parent);
    free(first);
    say("the program's fork handlers allocated in the parent and in the child\n");
    say("all checks passed\n");
    return 0;
}
