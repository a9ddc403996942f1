/* Closes standard error before it exits, as GNU coreutils do (gnulib's close_stdout,
 * an atexit handler, closes stdout and stderr to report write errors): ls, cat,
 * sort, true... With "reopen", a file is opened after the close, which takes fd 2
 * (the lowest free one): the statistics must not be written into it.
 *
 * usage: closes_stderr [reopen FILE] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *reopen;

static void close_streams(void) {
    if (fclose(stderr) != 0)
        _exit(3);
    if (reopen) {
        int fd = open(reopen, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd != 2)
            _exit(4);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "reopen") == 0)
        reopen = argv[2];
    char *p = malloc(100);
    if (!p)
        return 1;
    memset(p, 1, 100);
    free(p);
    atexit(close_streams);
    puts("done");
    return 0;
}
