/* What an attacker inside a container does to run a binary the image does not have, through
 * paths fanotify alone cannot see or sees late (tests/kernel_layer.rs). Built static: the
 * scratch containers have no libc. Every subcommand prints one line `<name>=<result>`, where
 * the result is `ran` (the payload ran: it prints its own line), `EPERM`, `EACCES`, ... (the
 * errno of the refused step), or `setup-<errno>` when the attack could not even be set up.
 *
 *   dgattack fsmount-exec PAYLOAD          tmpfs never attached (fsopen+fsmount), execveat
 *   dgattack open-tree-exec DIR NAME       a detached clone of DIR's mount, execveat NAME in it
 *   dgattack open-tree-map DIR NAME        the same clone, NAME mapped PROT_EXEC (a dlopen's load)
 *   dgattack proc-fd-exec DIR NAME         the clone, exec through /proc/self/fd/N/NAME
 *   dgattack memfd-exec PAYLOAD            memfd_create + fexecve
 *   dgattack memfd-hold PAYLOAD TRIGGER    memfd made now; fexecve once TRIGGER exists
 *   dgattack shm-exec PAYLOAD              SysV shared memory, exec through /proc/self/map_files
 *   dgattack map-exec FILE                 mmap(PROT_READ|PROT_EXEC) of FILE
 *   dgattack mprotect-exec FILE            mmap(PROT_READ), then mprotect adding PROT_EXEC
 *   dgattack aio-write FILE SRC            overwrite FILE with SRC's bytes through Linux AIO
 *   dgattack aio-map FILE SRC              FILE opened for reading first, then overwritten with
 *                                          SRC's bytes through Linux AIO, then that first fd
 *                                          mapped PROT_EXEC (no open after the write)
 *   dgattack escape-exec PAYLOAD           new user, mount and PID namespaces, a chroot, then
 *                                          fsmount-exec from there
 *   dgattack pivot-exec PAYLOAD            new user and mount namespaces, pivot_root into a
 *                                          new tmpfs holding the payload, exec it there
 *   dgattack userns-tmpfs-exec PAYLOAD     unshare(user+mount), mount a tmpfs, exec from it
 *   dgattack exec FILE [NAME]              plain execve (the line says NAME=... if given)
 * The payload, a busybox, is run as `busybox sh -c 'echo payload-ran; sleep 0.3'`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef FSCONFIG_CMD_CREATE
#define FSCONFIG_CMD_CREATE 6
#endif

extern char **environ;
static const char *name = "?";

static int fail(const char *step, int err)
{
	const char *e = err == EPERM ? "EPERM" : err == EACCES ? "EACCES" : err == ENOEXEC ? "ENOEXEC" : NULL;
	if (e)
		printf("%s=%s\n", name, e);
	else
		printf("%s=%s-errno%d\n", name, step, err);
	fflush(stdout);
	return 1;
}

static int setup_fail(int err)
{
	printf("%s=setup-errno%d\n", name, err);
	fflush(stdout);
	return 2;
}

/* The payload's bytes. */
static char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return NULL;
	char *buf = malloc(st.st_size);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);
		if (n <= 0)
			return NULL;
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
}

static int write_all(int fd, const char *b, size_t n)
{
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w <= 0)
			return -1;
		b += w;
		n -= w;
	}
	return 0;
}

/* It stays a moment: a recorder that looks at a process after its exec finds it there. */
static char *payload_argv[] = { "busybox", "sh", "-c", "echo payload-ran; sleep 0.3", NULL };

static int exec_at(int dirfd, const char *file, int flags)
{
	fflush(stdout);
	syscall(SYS_execveat, dirfd, file, payload_argv, environ, flags);
	return fail("execveat", errno);
}

/* A tmpfs never attached anywhere (fsopen + fsmount) holding the payload as `file`. */
static int detached_tmpfs_with(const char *payload, const char *file)
{
	size_t len;
	char *b = slurp(payload, &len);
	if (!b)
		return -1;
	int fs = syscall(SYS_fsopen, "tmpfs", 0);
	if (fs < 0 || syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return -1;
	int mnt = syscall(SYS_fsmount, fs, 0, 0);
	if (mnt < 0)
		return -1;
	int f = openat(mnt, file, O_CREAT | O_WRONLY, 0755);
	if (f < 0 || write_all(f, b, len) < 0)
		return -1;
	close(f);
	return mnt;
}

static int fsmount_exec(const char *payload)
{
	int mnt = detached_tmpfs_with(payload, "x");
	if (mnt < 0)
		return setup_fail(errno);
	return exec_at(mnt, "x", 0);
}

/* A new user namespace (with `more`: other namespaces too) whose root is this process's uid
 * and gid (root in a plain container, its own root in one that maps root elsewhere). */
static int own_user_namespace(int more)
{
	int uid = getuid(), gid = getgid();
	if (unshare(CLONE_NEWUSER | more) < 0)
		return -1;
	int fd = open("/proc/self/setgroups", O_WRONLY);
	if (fd >= 0) {
		write_all(fd, "deny", 4);
		close(fd);
	}
	char map[64];
	const char *files[2] = { "/proc/self/uid_map", "/proc/self/gid_map" };
	int ids[2] = { uid, gid };
	for (int i = 0; i < 2; i++) {
		int n = snprintf(map, sizeof map, "0 %d 1", ids[i]);
		fd = open(files[i], O_WRONLY);
		if (fd >= 0) {
			write_all(fd, map, n);
			close(fd);
		}
	}
	return 0;
}

static int clone_of(const char *dir)
{
	return syscall(SYS_open_tree, AT_FDCWD, dir, OPEN_TREE_CLONE);
}

static int open_tree_exec(const char *dir, const char *file)
{
	int t = clone_of(dir);
	if (t < 0)
		return setup_fail(errno);
	return exec_at(t, file, 0);
}

static int proc_fd_exec(const char *dir, const char *file)
{
	int t = clone_of(dir);
	if (t < 0)
		return setup_fail(errno);
	char p[256];
	snprintf(p, sizeof p, "/proc/self/fd/%d/%s", t, file);
	fflush(stdout);
	execve(p, payload_argv, environ);
	return fail("execve", errno);
}

static int map_fd(int fd, int mprotect_after)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return setup_fail(errno);
	size_t len = st.st_size ? st.st_size : 4096;
	void *m = mmap(NULL, len, mprotect_after ? PROT_READ : PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return fail("mmap", errno);
	if (mprotect_after && mprotect(m, len, PROT_READ | PROT_EXEC) < 0)
		return fail("mprotect", errno);
	printf("%s=ran\n", name);
	return 0;
}

static int open_tree_map(const char *dir, const char *file)
{
	int t = clone_of(dir);
	if (t < 0)
		return setup_fail(errno);
	int fd = openat(t, file, O_RDONLY);
	if (fd < 0)
		return setup_fail(errno);
	return map_fd(fd, 0);
}

static int memfd_of(const char *payload)
{
	size_t len;
	char *b = slurp(payload, &len);
	if (!b)
		return -1;
	int m = memfd_create("dgattack", MFD_CLOEXEC | MFD_EXEC);
	if (m < 0)
		m = memfd_create("dgattack", MFD_CLOEXEC);
	if (m < 0 || write_all(m, b, len) < 0)
		return -1;
	return m;
}

static int memfd_exec(const char *payload)
{
	int m = memfd_of(payload);
	if (m < 0)
		return fail("memfd_create", errno);
	return exec_at(m, "", AT_EMPTY_PATH);
}

static int memfd_hold(const char *payload, const char *trigger)
{
	int m = memfd_of(payload);
	if (m < 0)
		return setup_fail(errno);
	printf("%s-held\n", name);
	fflush(stdout);
	for (int i = 0; i < 6000 && access(trigger, F_OK) != 0; i++)
		usleep(10000);
	return exec_at(m, "", AT_EMPTY_PATH);
}

static int shm_exec(const char *payload)
{
	size_t len;
	char *b = slurp(payload, &len);
	if (!b)
		return setup_fail(errno);
	int id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0700);
	if (id < 0)
		return setup_fail(errno);
	char *at = shmat(id, NULL, 0);
	if (at == (void *)-1)
		return setup_fail(errno);
	memcpy(at, b, len);
	/* Its mapping's entry in /proc/self/map_files: the segment's file. */
	size_t pg = (len + 4095) & ~(size_t)4095;
	char p[128];
	snprintf(p, sizeof p, "/proc/self/map_files/%lx-%lx", (unsigned long)at, (unsigned long)at + pg);
	fflush(stdout);
	execve(p, payload_argv, environ);
	return fail("execve", errno);
}

static int map_exec(const char *file, int mprotect_after)
{
	int fd = open(file, O_RDONLY);
	if (fd < 0)
		return setup_fail(errno);
	return map_fd(fd, mprotect_after);
}

static int aio_write(const char *file, const char *src);

static int aio_map(const char *file, const char *src)
{
	int fd = open(file, O_RDONLY);
	if (fd < 0)
		return setup_fail(errno);
	const char *keep = name;
	name = "aio-map-write";
	int r = aio_write(file, src);
	name = keep;
	if (r)
		return r;
	return map_fd(fd, 0);
}

static int aio_write(const char *file, const char *src)
{
	size_t len;
	char *b = slurp(src, &len);
	if (!b)
		return setup_fail(errno);
	int fd = open(file, O_WRONLY);
	if (fd < 0)
		return setup_fail(errno);
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, 1, &ctx) < 0)
		return setup_fail(errno);
	struct iocb cb;
	memset(&cb, 0, sizeof cb);
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_fildes = fd;
	cb.aio_buf = (unsigned long)b;
	cb.aio_nbytes = len;
	struct iocb *list[1] = { &cb };
	if (syscall(SYS_io_submit, ctx, 1, list) != 1)
		return fail("io_submit", errno);
	struct io_event ev;
	if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1)
		return fail("io_getevents", errno);
	printf("%s=written-%lld\n", name, (long long)ev.res);
	return 0;
}

/* A tmpfs mounted at `dir` (made if need be) holding the payload as `dir/file`. */
static int attached_tmpfs_with(const char *payload, const char *dir, const char *file)
{
	size_t len;
	char *b = slurp(payload, &len);
	char path[256];
	if (!b || snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return -1;
	mkdir(dir, 0700);
	if (mount("none", dir, "tmpfs", 0, NULL) < 0)
		return -1;
	int f = open(path, O_CREAT | O_WRONLY, 0755);
	if (f < 0 || write_all(f, b, len) < 0)
		return -1;
	close(f);
	return 0;
}

static int userns_tmpfs_exec(const char *payload)
{
	if (own_user_namespace(CLONE_NEWNS) < 0 || attached_tmpfs_with(payload, "/tmp/dgattack-mnt", "x") < 0)
		return setup_fail(errno);
	fflush(stdout);
	execve("/tmp/dgattack-mnt/x", payload_argv, environ);
	return fail("execve", errno);
}

static int escape_exec(const char *payload)
{
	if (own_user_namespace(CLONE_NEWNS | CLONE_NEWPID) < 0)
		return setup_fail(errno);
	fflush(stdout);
	pid_t p = fork();
	if (p < 0)
		return setup_fail(errno);
	if (p > 0) {
		int st = 0;
		waitpid(p, &st, 0);
		return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
	}
	/* PID 1 of a new PID namespace, in a chroot of its own. */
	int mnt = detached_tmpfs_with(payload, "escaped");
	if (mnt < 0 || chroot("/tmp") < 0 || chdir("/") < 0)
		return setup_fail(errno);
	return exec_at(mnt, "escaped", 0);
}

static int pivot_exec(const char *payload)
{
	if (own_user_namespace(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    attached_tmpfs_with(payload, "/tmp/dgattack-root", "pivoted") < 0)
		return setup_fail(errno);
	mkdir("/tmp/dgattack-root/old", 0700);
	if (syscall(SYS_pivot_root, "/tmp/dgattack-root", "/tmp/dgattack-root/old") < 0 || chdir("/") < 0)
		return setup_fail(errno);
	fflush(stdout);
	execve("/pivoted", payload_argv, environ);
	return fail("execve", errno);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: dgattack SUBCOMMAND ARGS (see the source)\n");
		return 64;
	}
	name = argv[1];
	const char *c = argv[1];
	if (!strcmp(c, "fsmount-exec"))
		return fsmount_exec(argv[2]);
	if (!strcmp(c, "open-tree-exec") && argc > 3)
		return open_tree_exec(argv[2], argv[3]);
	if (!strcmp(c, "open-tree-map") && argc > 3)
		return open_tree_map(argv[2], argv[3]);
	if (!strcmp(c, "proc-fd-exec") && argc > 3)
		return proc_fd_exec(argv[2], argv[3]);
	if (!strcmp(c, "memfd-exec"))
		return memfd_exec(argv[2]);
	if (!strcmp(c, "memfd-hold") && argc > 3)
		return memfd_hold(argv[2], argv[3]);
	if (!strcmp(c, "shm-exec"))
		return shm_exec(argv[2]);
	if (!strcmp(c, "map-exec"))
		return map_exec(argv[2], 0);
	if (!strcmp(c, "mprotect-exec"))
		return map_exec(argv[2], 1);
	if (!strcmp(c, "aio-write") && argc > 3)
		return aio_write(argv[2], argv[3]);
	if (!strcmp(c, "aio-map") && argc > 3)
		return aio_map(argv[2], argv[3]);
	if (!strcmp(c, "escape-exec"))
		return escape_exec(argv[2]);
	if (!strcmp(c, "pivot-exec"))
		return pivot_exec(argv[2]);
	if (!strcmp(c, "userns-tmpfs-exec"))
		return userns_tmpfs_exec(argv[2]);
	if (!strcmp(c, "exec")) {
		if (argc > 3)
			name = argv[3];
		fflush(stdout);
		execve(argv[2], payload_argv, environ);
		return fail("execve", errno);
	}
	fprintf(stderr, "dgattack: unknown subcommand %s\n", c);
	return 64;
}
