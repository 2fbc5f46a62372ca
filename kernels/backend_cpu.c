/* backend_cpu.c — the CPU backend: host memory and the cs_cpu_* kernels, every operation
 * of backend_ops.h. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static void *cpu_alloc(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_synchronize(void) {}

const cs_backend cs_backend_cpu = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .release = free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
#define CS_OP(ret, op, params) .op = cs_cpu_##op,
#define CS_NHWC_OP CS_OP
#include "backend_ops.h"
};
