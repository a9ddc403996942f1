/* Prints the file of the object whose `malloc` this process calls: under
 * LD_PRELOAD=LIB, LIB if LIB was preloaded and defines malloc, else libc. The programs
 * bench runs it once per preloaded library before measuring anything, because ld.so
 * only warns about a library it cannot preload and the run then measures glibc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

int main(void) {
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    if (!m || !dladdr(m, &info) || !info.dli_fname) return 1;
    puts(info.dli_fname);
    return 0;
}
