/* `malloc`/`free`, `calloc` and `realloc` of the sizes above malloc's 1 KiB table,
 * the paths beyond the per-CPU fast path of the small sizes (branch `slowpath`):
 * `mid_sizes MODE CALLS` keeps a window of 16 live objects and replaces one per call
 * (frees it and allocates a new one of a random size, or reallocates it), and prints
 * the thread's CPU nanoseconds per call. MODE (sizes):
 *   malloc 1,025-16,384; mid 1,025-4,096; big 16,384-65,535 (zlib's window and
 *   deflate buffers); calloc 16-255; realloc 16-255; reallocbig 1,024-4,095.
 * Not part of the benchmark run; built by hand and run under each library in turn:
 *
 *   cc -O2 -o /tmp/mid_sizes crates/restartable-malloc/benches/c/mid_sizes.c
 *   LD_PRELOAD=target/release/librestartable_malloc.so /tmp/mid_sizes malloc 1000000
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "malloc";
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    void *win[16] = {0};
    unsigned long s = 0x9e3779b97f4a7c15UL, sink = 0;
    size_t lo = 1025, span = 15 * 1024;
    if (!strcmp(mode, "mid")) { lo = 1025; span = 3 * 1024; }
    if (!strcmp(mode, "big")) { lo = 16 * 1024; span = 48 * 1024; }
    if (!strcmp(mode, "calloc") || !strcmp(mode, "realloc")) { lo = 16; span = 240; }
    if (!strcmp(mode, "reallocbig")) { lo = 1024; span = 3 * 1024; }
    int re = !strcmp(mode, "realloc") || !strcmp(mode, "reallocbig");
    int ca = !strcmp(mode, "calloc");
    double t = now();
    for (long i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int k = i & 15;
        size_t sz = lo + s % span;
        if (re) {
            void *q = realloc(win[k], sz);
            if (!q) return 1;
            win[k] = q;
            ((char *)win[k])[0] = 1;
            continue;
        }
        free(win[k]);
        win[k] = ca ? calloc(1, sz) : malloc(sz);
        if (!win[k]) return 1;
        ((volatile char *)win[k])[0] = 1;
        sink += (unsigned long)win[k];
    }
    double e = now() - t;
    for (int k = 0; k < 16; k++) free(win[k]);
    printf("%s %.2f ns/op\n", mode, e / n);
    return sink == 1;
}
