/* A shared object that says it was loaded: built with -DNAME="..." into the image's library
 * and into the drift library the tests drop into a container. */
#include <unistd.h>
#include <string.h>

#ifndef NAME
#define NAME "lib"
#endif

__attribute__((constructor)) static void loaded(void) {
    const char *m = NAME "-loaded\n";
    (void)!write(1, m, strlen(m));
}

int marker_value(void) { return 42; }
