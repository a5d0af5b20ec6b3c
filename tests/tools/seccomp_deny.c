/* Runs a command with some system calls refused by a seccomp filter, as a service manager's
 * or a container runtime's filter refuses them (systemd's RestrictSUIDSGID=yes refuses openat2
 * whole, with ENOSYS).
 *
 *   seccomp_deny ERRNO NR[,NR...] -- COMMAND [ARG...]
 *
 * ERRNO is a number (38 = ENOSYS, 1 = EPERM); NR are x86_64/aarch64 system call numbers. The
 * filter is inherited by the command and everything it starts. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: %s ERRNO NR[,NR...] -- COMMAND [ARG...]\n", argv[0]);
        return 64;
    }
    int err = atoi(argv[1]);
    long nrs[32];
    int n = 0;
    for (char *s = strtok(argv[2], ","); s && n < 32; s = strtok(NULL, ",")) nrs[n++] = atol(s);
    struct sock_filter prog[2 + 2 * 32 + 1];
    int i = 0;
    prog[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (int k = 0; k < n; k++) {
        prog[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[k], 0, 1);
        prog[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA));
    }
    prog[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = {.len = (unsigned short)i, .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
        perror("seccomp");
        return 71;
    }
    execvp(argv[4], argv + 4);
    perror("exec");
    return 127;
}
