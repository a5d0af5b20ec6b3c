// SPDX-License-Identifier: GPL-2.0
/*
 * driftgate's kernel layer: a BPF LSM program that checks, at the moment of use, what the
 * daemon decided in user space (through fanotify).
 *
 * In a container the daemon enforces, only these may be executed or mapped executable:
 *  - a file of the container's rootfs (its overlay superblock) that is the image's own inode
 *    (overlayfs has no upper dentry for it), or a writable-layer file the daemon decided and
 *    allowed, unchanged since (size and change time) and not open for writing;
 *  - a file on a mount the daemon marked, that it allowed (or every file of a mount a rule
 *    allows).
 * Anything else is refused with EPERM and reported on the ring buffer: a mount the daemon
 * never saw (detached, new, remounted exec, a new mount namespace's copies), a memfd, SysV
 * shared memory, a writable-layer file never decided or changed since. In a container the
 * daemon only audits, what fanotify cannot see (unwatched mounts, memfds) is reported, not
 * refused.
 *
 * A task belongs to a container by what it cannot leave: its cgroup (cgroup v2 id) or its PID
 * namespace, or one of that namespace's ancestors (a process that makes PID namespaces of its
 * own stays inside). Everything else (the host, unknown tasks) leaves after the first lookups.
 *
 * The maps are pinned by name, so what the daemon decided keeps holding while it is down or
 * restarting (its links are pinned too).
 */
#include "kernel.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define PROT_EXEC 0x4
#define VM_EXEC 0x4UL
#define MAX_PIDNS_DEPTH 8
/* A kernel-internal mount (`ERR_PTR(-EINVAL)`): overlayfs's private layer mounts among them. */
#define MNT_NS_INTERNAL ((void *)-22L)
/* FMODE_BACKING: bit 25 from Linux 6.5, bit 24 from 6.14 (bit 24 was unused before). */
#define FMODE_BACKING_ANY ((1U << 24) | (1U << 25))

/* A container's policy (values of dg_pidns and dg_cgroup): bits. */
#define POLICY_AUDIT 1    /* report what fanotify cannot see; refuse nothing */
#define POLICY_ENFORCE 2  /* refuse anything but what was decided */
#define POLICY_FILELESS 4 /* with ENFORCE: refuse memfds and shared memory too */
#define POLICY_LIBRARIES 8 /* with ENFORCE: check executable mappings too */

/* Values of dg_mounts. */
#define MNT_MARKED 1
#define MNT_ALLOWED 2 /* a rule allows every file on this mount */

#define WHAT_EXEC 1
#define WHAT_MMAP 2
#define WHAT_MPROTECT 3

#define WHY_UNWATCHED 1 /* neither the container's rootfs nor a mount the daemon marked */
#define WHY_UNDECIDED 2 /* a writable-layer or mount file not decided allowed, or changed since */
#define WHY_WRITTEN 3   /* open for writing */

#define STAT_CHECKED 0
#define STAT_REFUSED 1
#define STAT_REPORTED 2
#define STAT_LOST 3
#define STAT_MAX 4

struct file_key {
	u32 dev;
	u32 pad;
	u64 ino;
};

struct file_ver {
	s64 ctime_sec;
	u32 ctime_nsec;
	u32 pad;
	s64 size;
};

struct event {
	u32 what;
	u32 why;
	u32 policy;
	u32 refused;
	u32 pid;
	u32 tgid;
	u32 pidns; /* the registered PID namespace that matched, else the task's own */
	u32 dev;
	u64 cgroup;
	u64 ino;
	u64 mnt_id;
	u64 magic;
	char comm[16];
	char name[64];
	char path[256];
	u32 mnt_legacy; /* the mount's id as /proc/<pid>/mountinfo lists it */
	u32 pad;
};

/* Set by the daemon. overlayfs is often a module, whose types are not in the kernel's own BTF:
 * the daemon reads `struct ovl_inode`'s layout from the module's BTF and writes it here. */
struct config {
	u32 on;     /* some container is registered */
	u32 ovl_ok; /* the offsets below are known */
	u64 ovl_vfs_inode;
	u64 ovl_upperdentry;
	u64 tick_ns;      /* nanoseconds per clock tick (USER_HZ), as /proc/<pid>/stat counts */
	u32 cg_ancestors; /* some container is told by its cgroup alone (hostPID): look up the
			   * task's cgroup's ancestors too */
	u32 pad;
};

/* A container's PID namespace: namespace inode numbers are reused as soon as a namespace is
 * freed, so the entry names its init process too (its start time, in clock ticks since boot,
 * as /proc/<pid>/stat has it); an entry whose namespace is gone matches no new one. */
struct pidns_val {
	u32 policy;
	u32 pad;
	u64 init_start;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct pidns_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_pidns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_rootfs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_mounts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct file_key);
	__type(value, struct file_ver);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_allowed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, u32);
	__type(value, u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dg_events SEC(".maps");

static __always_inline void stat_inc(u32 i)
{
	u64 *v = bpf_map_lookup_elem(&dg_stats, &i);
	if (v)
		*v += 1;
}

#define MAX_CGROUP_DEPTH 16

/* The policy of the current task's container, 0 when it is none the daemon watches. */
static __always_inline u32 task_policy(struct config *cfg, u64 *cgroup, u32 *pidns)
{
	if (!cfg->on)
		return 0;
	u64 cg = bpf_get_current_cgroup_id();
	*cgroup = cg;
	u32 *p = bpf_map_lookup_elem(&dg_cgroup, &cg);
	if (p)
		return *p;
	struct task_struct *task = bpf_get_current_task_btf();
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	u32 level = BPF_CORE_READ(pid, level);
	if (level > 32)
		return 0;
	struct pid_namespace *ns = NULL;
	u64 at = bpf_core_field_offset(struct pid, numbers) + (u64)level * bpf_core_type_size(struct upid) +
		 bpf_core_field_offset(struct upid, ns);
	bpf_probe_read_kernel(&ns, sizeof(ns), (void *)pid + at);
	for (int i = 0; i < MAX_PIDNS_DEPTH; i++) {
		if (!ns)
			break;
		u32 inum = BPF_CORE_READ(ns, ns.inum);
		if (i == 0)
			*pidns = inum;
		struct pidns_val *v = bpf_map_lookup_elem(&dg_pidns, &inum);
		if (v && cfg->tick_ns) {
			struct task_struct *init = BPF_CORE_READ(ns, child_reaper);
			u64 start = init ? BPF_CORE_READ(init, start_boottime) / cfg->tick_ns : 0;
			if (start == v->init_start) {
				/* The namespace the daemon registered: it names the container even
				 * after a task of a nested namespace has exited. */
				*pidns = inum;
				return v->policy;
			}
		}
		ns = BPF_CORE_READ(ns, parent);
	}
	if (cfg->cg_ancestors) {
		for (int l = 1; l < MAX_CGROUP_DEPTH; l++) {
			u64 a = bpf_get_current_ancestor_cgroup_id(l);
			if (!a || a == cg)
				break;
			p = bpf_map_lookup_elem(&dg_cgroup, &a);
			if (p)
				return *p;
		}
	}
	return 0;
}

/* 1 with the upper (writable-layer) inode of an overlay inode, 0 for the image's own inode
 * (no upper), -1 when overlayfs's layout is not known. */
static __always_inline int ovl_upper(struct config *cfg, struct inode *inode, struct inode **upper)
{
	if (!cfg->ovl_ok)
		return -1;
	struct dentry *up = NULL;
	void *oi = (void *)inode - cfg->ovl_vfs_inode;
	bpf_probe_read_kernel(&up, sizeof(up), oi + cfg->ovl_upperdentry);
	if (!up)
		return 0;
	*upper = BPF_CORE_READ(up, d_inode);
	return *upper ? 1 : 0;
}

static __always_inline void ctime_of(struct inode *inode, s64 *sec, u32 *nsec)
{
	struct inode___pre611 *v66 = (void *)inode;
	struct inode___pre66 *v61 = (void *)inode;
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		*sec = BPF_CORE_READ(inode, i_ctime_sec);
		*nsec = BPF_CORE_READ(inode, i_ctime_nsec);
	} else if (bpf_core_field_exists(v66->__i_ctime)) {
		*sec = BPF_CORE_READ(v66, __i_ctime.tv_sec);
		*nsec = (u32)BPF_CORE_READ(v66, __i_ctime.tv_nsec);
	} else {
		*sec = BPF_CORE_READ(v61, i_ctime.tv_sec);
		*nsec = (u32)BPF_CORE_READ(v61, i_ctime.tv_nsec);
	}
}

static __always_inline u64 mount_id(struct vfsmount *vm)
{
	struct mount *m = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	if (bpf_core_field_exists(m->mnt_id_unique))
		return BPF_CORE_READ(m, mnt_id_unique);
	return (u64)(u32)BPF_CORE_READ(m, mnt_id);
}

struct seen {
	u32 dev;
	u32 mnt_legacy;
	u64 ino;
	u64 mnt_id;
	u64 magic;
};

/* The file as the task opened it. A mapping of an overlayfs file holds the real (layer) file, a
 * "backing file" on overlayfs's internal mount (that is what `file_mprotect` sees): its user
 * path is the container's overlay file, which is what is checked. */
static __always_inline void user_view(struct file *file, struct inode **inode, struct vfsmount **mnt)
{
	*inode = BPF_CORE_READ(file, f_inode);
	*mnt = BPF_CORE_READ(file, f_path.mnt);
	if (!bpf_core_type_exists(struct backing_file))
		return;
	struct mount *m = (void *)*mnt - bpf_core_field_offset(struct mount, mnt);
	if ((void *)BPF_CORE_READ(m, mnt_ns) != MNT_NS_INTERNAL)
		return;
	if (!(BPF_CORE_READ(file, f_mode) & FMODE_BACKING_ANY))
		return;
	struct backing_file *bf = (void *)file;
	*inode = BPF_CORE_READ(bf, user_path.dentry, d_inode);
	*mnt = BPF_CORE_READ(bf, user_path.mnt);
}

/* 0 when `file` may run in an enforced container, else why not. */
static __always_inline u32 check_file(struct config *cfg, struct file *file, struct seen *s)
{
	struct inode *inode = NULL;
	struct vfsmount *mnt = NULL;
	user_view(file, &inode, &mnt);
	if (!inode)
		return WHY_UNWATCHED;
	struct super_block *sb = BPF_CORE_READ(inode, i_sb);
	s->dev = BPF_CORE_READ(sb, s_dev);
	s->ino = BPF_CORE_READ(inode, i_ino);
	s->magic = BPF_CORE_READ(sb, s_magic);
	struct inode *real = inode;
	if (bpf_map_lookup_elem(&dg_rootfs, &s->dev)) {
		struct inode *upper = NULL;
		int u = ovl_upper(cfg, inode, &upper);
		if (u <= 0)
			return 0; /* the image's own bytes (or fanotify's decision stands alone) */
		real = upper;
	} else {
		s->mnt_id = mount_id(mnt);
		struct mount *mt = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
		s->mnt_legacy = BPF_CORE_READ(mt, mnt_id);
		u32 *m = bpf_map_lookup_elem(&dg_mounts, &s->mnt_id);
		if (!m)
			return WHY_UNWATCHED;
		if (*m & MNT_ALLOWED)
			return 0;
	}
	if (BPF_CORE_READ(real, i_writecount.counter) > 0)
		return WHY_WRITTEN;
	struct file_key k = { .dev = s->dev, .ino = s->ino };
	struct file_ver *v = bpf_map_lookup_elem(&dg_allowed, &k);
	if (!v)
		return WHY_UNDECIDED;
	s64 sec = 0;
	u32 nsec = 0;
	ctime_of(real, &sec, &nsec);
	if (v->size != BPF_CORE_READ(real, i_size) || v->ctime_sec != sec || v->ctime_nsec != nsec)
		return WHY_UNDECIDED;
	return 0;
}

/* A memfd ("memfd:...") or SysV shared memory ("SYSV...") segment. */
static __always_inline int fileless(struct file *file, char name[64])
{
	const unsigned char *n = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(name, 64, n);
	return (name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' && name[4] == 'd' &&
		name[5] == ':') ||
	       (name[0] == 'S' && name[1] == 'Y' && name[2] == 'S' && name[3] == 'V');
}

static __always_inline void report(u32 what, u32 why, u32 policy, u32 refused, struct file *file,
				   struct seen *s, u64 cgroup, u32 pidns, const char *name, int with_path)
{
	struct event *e = bpf_ringbuf_reserve(&dg_events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_LOST);
		return;
	}
	u64 id = bpf_get_current_pid_tgid();
	e->what = what;
	e->why = why;
	e->policy = policy;
	e->refused = refused;
	e->pid = (u32)id;
	e->tgid = id >> 32;
	e->pidns = pidns;
	e->dev = s->dev;
	e->cgroup = cgroup;
	e->ino = s->ino;
	e->mnt_id = s->mnt_id;
	e->magic = s->magic;
	e->mnt_legacy = s->mnt_legacy;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
	e->path[0] = 0;
	if (with_path)
		bpf_d_path(&file->f_path, e->path, sizeof(e->path));
	bpf_ringbuf_submit(e, 0);
	stat_inc(STAT_REPORTED);
}

/* The decision for one use of `file` by the current task; 0 or -EPERM. */
static __always_inline int decide(u32 what, struct file *file, int with_path)
{
	u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&dg_config, &zero);
	if (!cfg)
		return 0;
	u64 cgroup = 0;
	u32 pidns = 0;
	u32 policy = task_policy(cfg, &cgroup, &pidns);
	if (!policy)
		return 0;
	int enforce = policy & POLICY_ENFORCE;
	/* Mappings are checked where drift and added libraries are refused; in audit mode
	 * fanotify records loads. */
	if (what != WHAT_EXEC && (!enforce || !(policy & POLICY_LIBRARIES)))
		return 0;
	stat_inc(STAT_CHECKED);
	struct seen s = {};
	u32 why = check_file(cfg, file, &s);
	if (!why)
		return 0;
	char name[64] = {};
	int refuse = enforce;
	if (why == WHY_UNWATCHED && fileless(file, name) && !(policy & POLICY_FILELESS))
		refuse = 0;
	/* Audited: fanotify sees and records rootfs and mount files itself. */
	if (!refuse && why != WHY_UNWATCHED)
		return 0;
	if (!name[0]) {
		const unsigned char *n = BPF_CORE_READ(file, f_path.dentry, d_name.name);
		bpf_probe_read_kernel_str(name, sizeof(name), n);
	}
	report(what, why, policy, refuse, file, &s, cgroup, pidns, name, with_path);
	if (!refuse)
		return 0;
	stat_inc(STAT_REFUSED);
	return -EPERM;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(dg_exec, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	return decide(WHAT_EXEC, bprm->file, 1);
}

SEC("lsm/mmap_file")
int BPF_PROG(dg_mmap, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags,
	     int ret)
{
	if (ret)
		return ret;
	if (!file || !(prot & PROT_EXEC))
		return 0;
	return decide(WHAT_MMAP, file, 1);
}

SEC("lsm/file_mprotect")
int BPF_PROG(dg_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot, int ret)
{
	if (ret)
		return ret;
	if (!(prot & PROT_EXEC) || (BPF_CORE_READ(vma, vm_flags) & VM_EXEC))
		return 0;
	struct file *file = BPF_CORE_READ(vma, vm_file);
	if (!file)
		return 0;
	return decide(WHAT_MPROTECT, file, 0);
}
