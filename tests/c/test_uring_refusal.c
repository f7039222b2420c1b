/* tests/c/test_uring_refusal.c — the uring backend where io_uring_setup is refused (a seccomp filter, as in a
 * container): opening "uring" fails with the cause named, and "uring,native" falls back to native. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"

/* Refuse io_uring_setup with EPERM, allow everything else (the filter dies with the child). */
static int
refuse_io_uring_setup(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        return -1;
    }
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}

static int
check_in_child(void)
{
    const zl_backend_ops *ops = NULL;
    char why[512];
    if (refuse_io_uring_setup() < 0) {
        printf("FAIL seccomp filter: %s\n", strerror(errno));
        return 1;
    }
    zl_backend *b = zl_backend_open("uring", &ops, why, sizeof(why));
    int err = errno;
    if (b != NULL || err != EPERM || ops == NULL || strstr(why, "io_uring") == NULL ||
        (strstr(why, "seccomp") == NULL && strstr(why, "io_uring_disabled") == NULL)) {
        printf("FAIL [uring] refused setup: backend %p, errno %d, message '%s'\n", (void *)b, err, why);
        return 1;
    }
    printf("ok   [uring] refused setup gives EPERM and says why: %s\n", why);
    b = zl_backend_open("uring,native", &ops, why, sizeof(why));
    if (b == NULL || ops == NULL || strcmp(ops->name, "native") != 0) {
        printf("FAIL [uring] uring,native did not fall back to native: %s\n", why);
        return 1;
    }
    ops->destroy(b);
    printf("ok   [uring] uring,native falls back to native\n");
    return 0;
}

int
main(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        int code = check_in_child();
        fflush(stdout);
        _exit(code);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        printf("FAIL the child died\n");
        return 1;
    }
    return WEXITSTATUS(status);
}
