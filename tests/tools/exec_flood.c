/* Exec load for the reliability suite: PROCS processes execute FILEs (round-robin) for
 * SECONDS and report how long each exec waited.
 *
 * Usage: exec_flood MODE SECONDS PROCS FILE [FILE...]
 *   MODE run:     fork, execve, wait (a program that is allowed runs and exits)
 *   MODE attempt: execve in a loop without forking (what a flood of blocked execs costs the
 *                 attacker least); an exec that succeeds ends that worker ("escaped")
 *
 * Prints one line:
 *   execs=N ok=N denied=N txtbsy=N failed=N escaped=N rate=R p50_us=X p99_us=X max_us=X
 * ok: ran and exited 0; denied: EPERM/EACCES; failed: any other error or exit status. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 64

struct stats {
    uint64_t execs, ok, denied, txtbsy, failed;
    uint64_t max_ns;
    uint64_t hist[BUCKETS]; /* bucket i: [2^i, 2^(i+1)) microseconds, bucket 0 below 2 us */
};

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void record(struct stats *s, uint64_t ns) {
    uint64_t us = ns / 1000;
    int b = 0;
    while (us > 1 && b < BUCKETS - 1) {
        us >>= 1;
        b++;
    }
    s->hist[b]++;
    if (ns > s->max_ns)
        s->max_ns = ns;
    s->execs++;
}

static uint64_t percentile_us(const struct stats *s, double q) {
    uint64_t want = (uint64_t)(q * (double)s->execs), seen = 0;
    for (int b = 0; b < BUCKETS; b++) {
        seen += s->hist[b];
        if (seen > want)
            return 2ull << b; /* the bucket's upper bound */
    }
    return 0;
}

/* A worker that finishes its time exits with this; one whose exec got through ends with
 * whatever the program exits with. */
#define WORKER_DONE 7

static void worker(const char *mode, double secs, char **files, int nfiles, struct stats *shared) {
    struct stats s;
    memset(&s, 0, sizeof s);
    uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
    int attempt = strcmp(mode, "attempt") == 0;
    for (unsigned long i = 0; now_ns() < end; i++) {
        char *f = files[i % (unsigned long)nfiles];
        char *argv[] = {f, NULL};
        char *envp[] = {NULL};
        uint64_t t0 = now_ns();
        if (attempt) {
            /* Published first: if the exec succeeds, this process is gone. */
            if ((i & 63) == 0)
                *shared = s;
            execve(f, argv, envp);
            int e = errno;
            record(&s, now_ns() - t0);
            if (e == EPERM || e == EACCES)
                s.denied++;
            else if (e == ETXTBSY)
                s.txtbsy++;
            else
                s.failed++;
            continue;
        }
        pid_t p = vfork();
        if (p == 0) {
            execve(f, argv, envp);
            _exit(errno == EPERM || errno == EACCES ? 121 : errno == ETXTBSY ? 120 : 122);
        }
        int st = 0;
        if (p < 0 || waitpid(p, &st, 0) < 0) {
            s.failed++;
            continue;
        }
        record(&s, now_ns() - t0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            s.ok++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 121)
            s.denied++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 120)
            s.txtbsy++;
        else
            s.failed++;
    }
    *shared = s;
    _exit(WORKER_DONE);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: exec_flood run|attempt SECONDS PROCS FILE [FILE...]\n");
        return 2;
    }
    const char *mode = argv[1];
    double secs = atof(argv[2]);
    int procs = atoi(argv[3]);
    char **files = argv + 4;
    int nfiles = argc - 4;
    struct stats *shared =
        mmap(NULL, sizeof(struct stats) * (size_t)procs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 3;
    memset(shared, 0, sizeof(struct stats) * (size_t)procs);
    pid_t pids[procs];
    uint64_t start = now_ns();
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            worker(mode, secs, files, nfiles, &shared[i]);
    }
    struct stats total;
    memset(&total, 0, sizeof total);
    uint64_t escaped = 0;
    for (int i = 0; i < procs; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == WORKER_DONE))
            escaped++;
        const struct stats *s = &shared[i];
        total.execs += s->execs;
        total.ok += s->ok;
        total.denied += s->denied;
        total.txtbsy += s->txtbsy;
        total.failed += s->failed;
        if (s->max_ns > total.max_ns)
            total.max_ns = s->max_ns;
        for (int b = 0; b < BUCKETS; b++)
            total.hist[b] += s->hist[b];
    }
    double took = (double)(now_ns() - start) / 1e9;
    printf("execs=%llu ok=%llu denied=%llu txtbsy=%llu failed=%llu escaped=%llu rate=%.0f p50_us=%llu "
           "p99_us=%llu max_us=%llu\n",
           (unsigned long long)total.execs, (unsigned long long)total.ok, (unsigned long long)total.denied,
           (unsigned long long)total.txtbsy, (unsigned long long)total.failed, (unsigned long long)escaped,
           (double)total.execs / took, (unsigned long long)percentile_us(&total, 0.50),
           (unsigned long long)percentile_us(&total, 0.99), (unsigned long long)(total.max_ns / 1000));
    return 0;
}
