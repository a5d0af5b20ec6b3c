/* A fileless dropper for the tests: copies FILE into a memfd and runs it with fexecve, as
 * droppers that never touch the disk do. Usage: memfd_exec FILE ARGV0 [ARGS...]
 * Exit status: 2 usage or open error, 3 memfd_create refused, 4 write error, 126 fexecve refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: memfd_exec FILE ARGV0 [ARGS...]\n");
        return 2;
    }
    int src = open(argv[1], O_RDONLY);
    if (src < 0) {
        perror("open");
        return 2;
    }
    int m = memfd_create("dropper", MFD_CLOEXEC | MFD_EXEC);
    if (m < 0) {
        fprintf(stderr, "memfd_create(MFD_EXEC): %s\n", strerror(errno));
        m = memfd_create("dropper", MFD_CLOEXEC);
    }
    if (m < 0) {
        fprintf(stderr, "memfd_create: %s\n", strerror(errno));
        return 3;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(src, buf, sizeof buf)) > 0) {
        if (write(m, buf, (size_t)n) != n) {
            return 4;
        }
    }
    fexecve(m, argv + 2, environ);
    fprintf(stderr, "fexecve: %s\n", strerror(errno));
    return 126;
}
