/* process.c — process hygiene for the commands that hold keys for a long time (keyserver, serve): not
 * dumpable, no core files, OpenSSL's secure heap, and the file descriptor limit a server needs. */
#include "cloister/common.h"

#include <errno.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int cl_process_harden(size_t secure_heap_bytes, cl_err *err)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return cl_err_errno(err, CL_E_INTERNAL, errno, "cannot make the process non-dumpable (PR_SET_DUMPABLE)");
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return cl_err_errno(err, CL_E_INTERNAL, errno, "cannot disable core files (RLIMIT_CORE)");
    return cl_secure_heap_init(secure_heap_bytes, err);
}

uint64_t cl_raise_nofile_limit(uint64_t *before)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        if (before)
            *before = 0;
        return 0;
    }
    if (before)
        *before = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}
