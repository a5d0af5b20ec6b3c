/* The kernel types the program reads, declared with only the fields it uses. Every access is
 * relocated by name against the running kernel's BTF (CO-RE: preserve_access_index), so field
 * order, sizes and other fields do not matter here. */
#ifndef DRIFTGATE_KERNEL_H
#define DRIFTGATE_KERNEL_H

#include <linux/types.h>

typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;

typedef struct {
	int counter;
} atomic_t;

struct super_block {
	__u32 s_dev;
	unsigned long s_magic;
} __attribute__((preserve_access_index));

struct timespec64 {
	s64 tv_sec;
	long tv_nsec;
} __attribute__((preserve_access_index));

struct inode {
	unsigned short i_mode;
	struct super_block *i_sb;
	unsigned long i_ino;
	long long i_size;
	s64 i_ctime_sec; /* Linux 6.11+ */
	u32 i_ctime_nsec;
	atomic_t i_writecount;
} __attribute__((preserve_access_index));

/* Linux 6.6 to 6.10. */
struct inode___pre611 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

/* Before Linux 6.6. */
struct inode___pre66 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct qstr {
	u32 len;
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry {
	struct inode *d_inode;
	struct qstr d_name;
} __attribute__((preserve_access_index));

struct vfsmount {
	struct dentry *mnt_root;
	struct super_block *mnt_sb;
	int mnt_flags;
} __attribute__((preserve_access_index));

struct mnt_namespace;

struct mount {
	struct vfsmount mnt;
	struct mnt_namespace *mnt_ns;
	int mnt_id;
	u64 mnt_id_unique; /* Linux 6.8+ */
} __attribute__((preserve_access_index));

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_mode;
} __attribute__((preserve_access_index));

/* Linux 6.5+: how stacking filesystems (overlayfs) map a file: the mapping's file is the real
 * one, `user_path` the one the task opened. */
struct backing_file {
	struct file file;
	struct path user_path;
} __attribute__((preserve_access_index));

struct linux_binprm {
	struct file *file;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct task_struct;

struct pid_namespace {
	unsigned int level;
	struct pid_namespace *parent;
	struct task_struct *child_reaper;
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct upid {
	int nr;
	struct pid_namespace *ns;
} __attribute__((preserve_access_index));

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct pid *thread_pid;
	u64 start_boottime;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_flags;
	struct file *vm_file;
} __attribute__((preserve_access_index));

#endif
