/* backend_cpu.c — the CPU backend: host memory and the cs_cpu_* kernels, every operation
 * of backend_ops.h. */
#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"

/* Blocks from 1 MB up are mapped from and given back to the system directly: malloc keeps
 * what it is given back for later (its mmap threshold grows to 32 MB as large blocks come
 * and go), so the activations' pool giving blocks back would not make the process any
 * smaller. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CS_CPU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(CS_CPU_ASAN)
#define CS_CPU_MAP_MIN SIZE_MAX   /* AddressSanitizer guards malloc's blocks, not mapped ones */
#else
#define CS_CPU_MAP_MIN ((size_t)1 << 20)
#endif

static GMutex mapped_lock;
static GHashTable *mapped;   /* mapped block -> its length */

static void *cpu_alloc(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    if (bytes < CS_CPU_MAP_MIN) return aligned_alloc(64, bytes ? bytes : 64);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    g_mutex_lock(&mapped_lock);
    if (!mapped) mapped = g_hash_table_new(g_direct_hash, g_direct_equal);
    g_hash_table_insert(mapped, p, GSIZE_TO_POINTER(bytes));
    g_mutex_unlock(&mapped_lock);
    return p;
}

static void cpu_release(void *p) {
    if (!p) return;
    g_mutex_lock(&mapped_lock);
    const gsize length = mapped ? GPOINTER_TO_SIZE(g_hash_table_lookup(mapped, p)) : 0;
    if (length) g_hash_table_remove(mapped, p);
    g_mutex_unlock(&mapped_lock);
    if (length) munmap(p, length);
    else free(p);
}

static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_synchronize(void) {}

const cs_backend cs_backend_cpu = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
#define CS_OP(ret, op, params) .op = cs_cpu_##op,
#define CS_NHWC_OP CS_OP
#include "backend_ops.h"
};
