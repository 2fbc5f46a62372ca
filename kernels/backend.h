/* backend.h — the table through which the model code runs its operations: one per
 * device (the CPU here, CUDA in backend_cuda.cu), so that the networks, the tape and the
 * optimiser never branch on the device. Every pointer an operation receives is memory of
 * that backend (for the CPU, ordinary host memory). The operations are backend_ops.h's
 * list, with its signatures and semantics; the CPU's (kernels.h's cs_cpu_*) are the
 * reference the CUDA backend is tested against.
 */
#ifndef CONDSEG_BACKEND_H
#define CONDSEG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

typedef struct cs_backend cs_backend;

struct cs_backend {
    const char *name;               /* "cpu", "cuda" */
    int host_memory;                /* its memory is the host's: no copies needed */

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);   /* 64-byte aligned; NULL when out of memory */
    void (*release)(void *p);
    void (*upload)(void *dst, const void *src, size_t bytes);
    void (*download)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    void (*synchronize)(void);

    /* ---- the operations: one per entry of backend_ops.h (NHWC ones may be NULL) ---- */
#define CS_OP(ret, op, params) ret(*op) params;
#define CS_NHWC_OP CS_OP
#include "backend_ops.h"
};

extern const cs_backend cs_backend_cpu;

#endif
