/* Executes a program with an exact argument list, the way an attacker inside a container can
 * (tests/indirect/attacks.rs). Built static: the scratch containers have no libc.
 *
 *   argv_exec [--vvar] [--chroot DIR] [--check] [--] FILE ARGV0 [ARGS...]
 *
 *   --vvar        append one more argument whose string is in the [vvar] page: the kernel
 *                 copies it, but nobody else can read it (process_vm_readv fails there)
 *   --chroot DIR  chroot(DIR) first, without chdir: the working directory stays outside
 *   --check       do not execute: execveat(fd, "", AT_EMPTY_PATH | AT_EXECVE_CHECK), the check
 *                 an interpreter makes (Linux 6.14) before it runs a script; prints
 *                 `check=ok` or `check=<errno name>`
 *
 * The environment is passed on as it is. On a failed exec it prints the errno's name and
 * exits 126 (EACCES, EPERM) or 127. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AT_EXECVE_CHECK
#define AT_EXECVE_CHECK 0x10000
#endif

extern char **environ;

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ENOENT: return "ENOENT";
	case EINVAL: return "EINVAL";
	case ENOEXEC: return "ENOEXEC";
	default: return "other";
	}
}

static unsigned long vvar_address(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned long start = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		if (strstr(line, "[vvar")) {
			start = strtoul(line, NULL, 16);
			break;
		}
	}
	fclose(f);
	return start;
}

int main(int argc, char **argv)
{
	int vvar = 0, check = 0, i = 1;
	const char *jail = NULL;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--vvar"))
			vvar = 1;
		else if (!strcmp(argv[i], "--check"))
			check = 1;
		else if (!strcmp(argv[i], "--chroot") && i + 1 < argc)
			jail = argv[++i];
		else if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else
			break;
	}
	if (argc - i < 2) {
		fprintf(stderr, "usage: argv_exec [--vvar] [--chroot DIR] [--check] FILE ARGV0 [ARGS...]\n");
		return 2;
	}
	const char *file = argv[i];
	int n = argc - i - 1;
	char **args = calloc(n + 2, sizeof(char *));
	for (int k = 0; k < n; k++)
		args[k] = argv[i + 1 + k];
	if (vvar) {
		unsigned long a = vvar_address();
		if (!a) {
			printf("vvar=setup-missing\n");
			return 2;
		}
		args[n++] = (char *)a;
	}
	if (jail && chroot(jail) != 0) {
		printf("chroot=setup-%s\n", errname(errno));
		return 2;
	}
	if (check) {
		int fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			printf("check=setup-%s\n", errname(errno));
			return 2;
		}
		long r = syscall(SYS_execveat, fd, "", args, environ, AT_EMPTY_PATH | AT_EXECVE_CHECK);
		printf("check=%s\n", r == 0 ? "ok" : errname(errno));
		return r == 0 ? 0 : 126;
	}
	execve(file, args, environ);
	int e = errno;
	fprintf(stderr, "argv_exec: %s: %s\n", file, errname(e));
	return e == EACCES || e == EPERM ? 126 : 127;
}
