/* How fast the kernel copies a cached file page into a buffer, by the buffer's offset
 * in its 4 KiB page: `pread_offset FILE CALLS` reads the first 256 KiB of FILE (keep it
 * cached: read it once before) 4 KiB at a time, CALLS times per offset, into a buffer
 * at each offset, and prints nanoseconds per call. The evidence behind
 * `restartable_alloc::size_class::first_offset`: a buffer 4 to 16 bytes past a page
 * boundary (sqlite's page buffers in an object that starts a page: its allocator puts
 * an 8-byte size first) is several times slower than at any other offset (4 KiB
 * aliasing between the copy's stores and its next loads). Not part of the benchmark
 * run; built by hand:
 *
 *   cc -O2 -o /tmp/pread_offset crates/restartable-malloc/benches/c/pread_offset.c
 *   head -c 262144 /dev/urandom > /tmp/f.bin && cat /tmp/f.bin > /dev/null
 *   /tmp/pread_offset /tmp/f.bin 100000
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: pread_offset FILE CALLS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    long calls = atol(argv[2]);
    if (calls <= 0) {
        fprintf(stderr, "CALLS must be a positive number\n");
        return 2;
    }
    size_t len = 1 << 20;
    char *buf = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < len; i += 4096) buf[i] = 1;
    static const int offsets[] = {0, 4, 8, 12, 16, 24, 32, 48, 64, 72, 128, 264, 512, 520, 2048, 4088};
    /* The first pass warms up; the second is printed. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < sizeof offsets / sizeof *offsets; k++) {
            char *dst = buf + 65536 + offsets[k];
            double t0 = now_ns();
            for (long i = 0; i < calls; i++) {
                if (pread(fd, dst, 4096, (off_t)(i % 64) * 4096) != 4096) {
                    fprintf(stderr, "%s: a short read (the file needs 256 KiB)\n", argv[1]);
                    return 1;
                }
            }
            double t1 = now_ns();
            if (pass == 1) printf("page offset %4d: %6.0f ns per 4 KiB pread\n", offsets[k], (t1 - t0) / calls);
        }
    }
    return 0;
}
