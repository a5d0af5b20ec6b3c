/* A dynamic program for the library tests: dlopen()s each argument, says whether it loaded,
 * and always goes on to its end. Built against the host's glibc, whose loader and libc the
 * test image ships. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (h)
            printf("dlopen %s=ok\n", argv[i]);
        else
            printf("dlopen %s=fail (%s)\n", argv[i], dlerror());
    }
    printf("main-ran\n");
    return 0;
}
