/* The check-then-exec race, as an attacker runs it: one process rewrites a file in a loop
 * (one byte at OFFSET flips between GOOD and BAD) while this one executes it ITERATIONS times.
 * The file with GOOD is the image's program (exits 0); with BAD it is a modified one (exits
 * with another status). A run of the modified bytes without a decision on them is a bypass.
 * Usage: exec_race FILE OFFSET GOOD BAD ITERATIONS [PAUSE_US]
 *   GOOD, BAD: byte values; PAUSE_US: the writer's pause after each write (default 0)
 * Prints: good=N bad=N txtbsy=N denied=N other=N */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: exec_race FILE OFFSET GOOD BAD ITERATIONS [PAUSE_US]\n");
        return 2;
    }
    const char *file = argv[1];
    off_t off = atol(argv[2]);
    unsigned char good = (unsigned char)atoi(argv[3]), bad = (unsigned char)atoi(argv[4]);
    long n = atol(argv[5]);
    useconds_t pause = argc == 7 ? (useconds_t)atol(argv[6]) : 0;
    pid_t writer = fork();
    if (writer == 0) {
        for (unsigned long i = 0;; i++) {
            int fd = open(file, O_WRONLY);
            if (fd < 0)
                continue; /* ETXTBSY while it is being executed */
            unsigned char b = (i & 1) ? good : bad;
            if (pwrite(fd, &b, 1, off) != 1)
                _exit(3);
            close(fd);
            if (pause)
                usleep(pause);
        }
    }
    long ran_good = 0, ran_bad = 0, txtbsy = 0, denied = 0, other = 0;
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            char *args[] = {(char *)file, NULL};
            execv(file, args);
            _exit(errno == ETXTBSY ? 120 : (errno == EPERM || errno == EACCES) ? 121 : 122);
        }
        int st;
        if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st)) {
            other++;
            continue;
        }
        switch (WEXITSTATUS(st)) {
        case 0: ran_good++; break;
        case 120: txtbsy++; break;
        case 121: denied++; break;
        case 122: other++; break;
        default: ran_bad++; break;
        }
    }
    kill(writer, SIGKILL);
    waitpid(writer, NULL, 0);
    /* Leave the image's content in place. */
    int fd = open(file, O_WRONLY);
    if (fd >= 0) {
        pwrite(fd, &good, 1, off);
        close(fd);
    }
    printf("good=%ld bad=%ld txtbsy=%ld denied=%ld other=%ld\n", ran_good, ran_bad, txtbsy, denied, other);
    return 0;
}
