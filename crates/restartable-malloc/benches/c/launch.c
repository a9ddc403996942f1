/* Runs a program and writes its peak RSS: `launch OUT PRELOAD program args...` forks,
 * execs the program (with LD_PRELOAD=PRELOAD unless PRELOAD is empty; the launcher
 * itself runs without it), waits for it and writes "<ru_maxrss KiB> <user CPU
 * microseconds> <system CPU microseconds> <minor page faults>\n" to OUT,
 * exiting with the program's status. A small process in between, because Linux carries a process's
 * peak RSS across exec: a program started straight from the (larger) benchmark
 * process would report at least the benchmark's own peak. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: launch OUT PRELOAD program [args...]\n");
        return 125;
    }
    pid_t pid = fork();
    if (pid < 0) return 125;
    if (pid == 0) {
        if (argv[2][0]) setenv("LD_PRELOAD", argv[2], 1);
        execvp(argv[3], argv + 3);
        perror(argv[3]);
        _exit(127);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) != pid) return 125;
    FILE *f = fopen(argv[1], "w");
    if (!f) return 125;
    /* peak RSS (KiB), user and system CPU time (microseconds) and minor page faults
     * of the tree */
    fprintf(f, "%ld %lld %lld %ld\n", ru.ru_maxrss,
            (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec, ru.ru_minflt);
    fclose(f);
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
