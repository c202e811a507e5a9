/* it_syscall_fault NAME=ERRNO... -- PROGRAM ARGS...
 *
 * Runs PROGRAM (exec'd in this process, so its pid is this one's) with
 * every call of each named system call failing with that errno, by a
 * seccomp filter: how an integration test makes the kernel refuse
 * something a real server must survive (statvfs of a storage volume that
 * went away, say) where no mount or permission can stage it. The filter
 * is kept across exec (no_new_privs); the program cannot remove it.
 * NAME is the system call's, not the C library's: on x86_64 glibc's
 * statvfs() is statfs, rename() rename, link() link, unlink() unlink, and
 * open() openat. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define FAULT_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FAULT_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "it_syscall_fault: add this architecture's AUDIT_ARCH"
#endif

static const struct {
    const char *name;
    long nr;
} syscalls[] = {
    {"statfs", SYS_statfs},       {"fstatfs", SYS_fstatfs},     {"fsync", SYS_fsync},
    {"fdatasync", SYS_fdatasync}, {"link", SYS_link},           {"linkat", SYS_linkat},
    {"unlink", SYS_unlink},       {"unlinkat", SYS_unlinkat},   {"rename", SYS_rename},
    {"renameat", SYS_renameat},   {"renameat2", SYS_renameat2}, {"ftruncate", SYS_ftruncate},
    {"fallocate", SYS_fallocate},
};

static const struct {
    const char *name;
    int value;
} errnos[] = {
    {"EIO", EIO},     {"ENOSPC", ENOSPC}, {"EPERM", EPERM},           {"EACCES", EACCES},
    {"EROFS", EROFS}, {"ENODEV", ENODEV}, {"EOPNOTSUPP", EOPNOTSUPP},
};

enum { MAX_FAULTS = 8 };

static int usage(const char *why)
{
    fprintf(stderr, "it_syscall_fault: %s\nusage: it_syscall_fault NAME=ERRNO... -- PROGRAM ARGS...\n",
            why);
    return 2;
}

int main(int argc, char **argv)
{
    long nr[MAX_FAULTS];
    int err[MAX_FAULTS], n = 0, i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq || n == MAX_FAULTS)
            return usage(argv[i]);
        *eq = '\0';
        nr[n] = -1;
        err[n] = -1;
        for (size_t k = 0; k < sizeof syscalls / sizeof syscalls[0]; k++)
            if (strcmp(argv[i], syscalls[k].name) == 0)
                nr[n] = syscalls[k].nr;
        for (size_t k = 0; k < sizeof errnos / sizeof errnos[0]; k++)
            if (strcmp(eq + 1, errnos[k].name) == 0)
                err[n] = errnos[k].value;
        if (nr[n] < 0 || err[n] < 0)
            return usage("unknown system call or errno");
        n++;
    }
    if (n == 0 || i + 1 >= argc)
        return usage("nothing to do");

    /* arch check, load nr, then per fault: nr == X ? ERRNO(e) : next */
    struct sock_filter prog[4 + 2 * MAX_FAULTS + 1];
    int len = 0;
    prog[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                               offsetof(struct seccomp_data, arch));
    prog[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FAULT_AUDIT_ARCH, 1, 0);
    prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    prog[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                               offsetof(struct seccomp_data, nr));
    for (int k = 0; k < n; k++) {
        prog[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (__u32)nr[k], 0, 1);
        prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
                                                   SECCOMP_RET_ERRNO | ((__u32)err[k] & 0xffff));
    }
    prog[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = {.len = (unsigned short)len, .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("it_syscall_fault: no_new_privs");
        return 1;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
        perror("it_syscall_fault: seccomp");
        return 1;
    }
    execv(argv[i + 1], argv + i + 1);
    perror("it_syscall_fault: exec");
    return 127;
}
