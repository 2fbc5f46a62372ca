/* graph.c — the execution context: a caching pool for activations (a second forward of
 * the same shape allocates nothing), scopes, probes, and the tensor-level operations,
 * which check shapes, allocate outputs and call the kernels. */
#include "graph.h"
#include "ctx.h"
#include "condseg.h"   /* CS_ERROR */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cs_math.h"
#include "kernels.h"

/* ---- profile: where the time goes, per kind of operation ----------------------------- */

typedef struct {
    double seconds, gflop;
    long calls;
} op_time;

gint64 cs_profile_start(const cs_ctx *ctx) { return ctx->profile ? g_get_monotonic_time() : 0; }

void cs_profile_end(cs_ctx *ctx, const char *kind, gint64 start, double gflop) {
    if (!ctx->profile) return;
    op_time *t = g_hash_table_lookup(ctx->profile, kind);
    if (!t) {
        t = g_new0(op_time, 1);
        g_hash_table_insert(ctx->profile, g_strdup(kind), t);
    }
    t->seconds += (g_get_monotonic_time() - start) / 1e6;
    t->gflop += gflop;
    t->calls++;
}

static gint compare_time(gconstpointer a, gconstpointer b, gpointer table) {
    const op_time *x = g_hash_table_lookup(table, a), *y = g_hash_table_lookup(table, b);
    return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

static void profile_report(cs_ctx *ctx) {
    GList *kinds = g_list_sort_with_data(g_hash_table_get_keys(ctx->profile), compare_time,
                                         ctx->profile);
    double total = 0;
    for (GList *k = kinds; k; k = k->next)
        total += ((op_time *)g_hash_table_lookup(ctx->profile, k->data))->seconds;
    fprintf(stderr, "condseg profile (all runs of this context): %.3f s in operations; memory: "
                    "activations at most %.1f MB in use, %.1f MB held, convolution workspace "
                    "%.1f MB\n",
            total, ctx->in_use_peak / 1e6, ctx->pool_peak / 1e6, ctx->workspace_floats * 4e-6);
    for (GList *k = kinds; k; k = k->next) {
        const op_time *t = g_hash_table_lookup(ctx->profile, k->data);
        fprintf(stderr, "  %-16s %8.1f ms %5.1f%% %6ld calls", (const char *)k->data,
                t->seconds * 1e3, 100 * t->seconds / total, t->calls);
        if (t->gflop > 0) fprintf(stderr, " %7.1f GFLOP/s", t->gflop / t->seconds);
        fputc('\n', stderr);
    }
    g_list_free(kinds);
}

/* ---- running out of memory --------------------------------------------------------- */

/* Back to cs_ctx_run_guarded with the message; outside a guarded run, the old abort. */
G_GNUC_NORETURN G_GNUC_PRINTF(2, 3)
static void out_of_memory(cs_ctx *ctx, const char *format, ...) {
    va_list args;
    va_start(args, format);
    g_vsnprintf(ctx->oom_message, sizeof ctx->oom_message, format, args);
    va_end(args);
    if (!ctx->oom_jump) g_error("%s", ctx->oom_message);
    longjmp(*ctx->oom_jump, 1);
}

gboolean cs_ctx_run_guarded(cs_ctx *ctx, cs_ctx_run_fn fn, void *data, GError **error) {
    jmp_buf jump;
    jmp_buf *volatile outer = ctx->oom_jump;   /* volatile: read after the longjmp */
    cs_cpu_take_alloc_failure();   /* a failure of an earlier, unguarded run is not ours */
    if (setjmp(jump)) {
        ctx->oom_jump = outer;
        cs_ctx_reset(ctx);
        g_set_error(error, CS_ERROR, CS_ERROR_MEMORY, "%s", ctx->oom_message);
        return FALSE;
    }
    ctx->oom_jump = &jump;
    fn(ctx, data);
    const size_t scratch = cs_cpu_take_alloc_failure();
    if (scratch)
        out_of_memory(ctx, "out of memory: a kernel could not allocate %zu bytes of scratch "
                           "memory", scratch);
    ctx->oom_jump = outer;
    return TRUE;
}

/* ---- pool ------------------------------------------------------------------------- */

static size_t block_size(size_t floats) { return (floats * sizeof(float) + 63) / 64 * 64; }

/* A request takes the smallest kept block that is large enough and at most 4 times as
 * large, else a new one: the decoders' maps come in many sizes, and blocks kept for exact
 * sizes only held twice what was ever in use at once (the paper network's forward: 388 MB
 * held for 176 MB in use). */
#define CS_POOL_SLACK(bytes) (4 * (bytes))

static gint size_compare(gconstpointer a, gconstpointer b, gpointer unused) {
    (void)unused;
    const gsize x = GPOINTER_TO_SIZE(a), y = GPOINTER_TO_SIZE(b);
    return x < y ? -1 : x > y;
}

static float *pool_reuse(cs_ctx *ctx, size_t bytes, size_t *have) {
    GTreeNode *node = g_tree_lower_bound(ctx->free_blocks, GSIZE_TO_POINTER(bytes));
    const size_t size = node ? GPOINTER_TO_SIZE(g_tree_node_key(node)) : 0;
    if (!node || size > CS_POOL_SLACK(bytes)) return NULL;
    GSList *list = g_tree_node_value(node);
    float *block = list->data;
    list = g_slist_delete_link(list, list);
    if (list) g_tree_insert(ctx->free_blocks, GSIZE_TO_POINTER(size), list);
    else g_tree_remove(ctx->free_blocks, GSIZE_TO_POINTER(size));
    *have = size;
    return block;
}

/* Before a new block is made, the smallest kept blocks go back to the system while the
 * pool would hold more than 1.5 times the most ever in use. Measured on both presets'
 * forwards (held / peak RSS / blocks made again in later runs): tighter limits or less
 * slack made blocks again and again; looser ones held more. */
#define CS_POOL_HELD(bytes) ((bytes) + (bytes) / 2)

static gboolean first_node(gpointer key, gpointer value, gpointer out) {
    ((gpointer *)out)[0] = key;
    ((gpointer *)out)[1] = value;
    return TRUE;
}

static void pool_trim(cs_ctx *ctx, size_t need) {
    const size_t in_use = ctx->in_use + need;
    const size_t limit = CS_POOL_HELD(in_use > ctx->in_use_peak ? in_use : ctx->in_use_peak);
    while (ctx->pool_bytes + need > limit && g_tree_nnodes(ctx->free_blocks) > 0) {
        gpointer smallest[2];   /* size, its blocks */
        g_tree_foreach(ctx->free_blocks, first_node, smallest);
        GSList *list = smallest[1];
        ctx->be->release(list->data);
        ctx->pool_bytes -= GPOINTER_TO_SIZE(smallest[0]);
        list = g_slist_delete_link(list, list);
        if (list) g_tree_insert(ctx->free_blocks, smallest[0], list);
        else g_tree_remove(ctx->free_blocks, smallest[0]);
    }
}

static float *pool_take(cs_ctx *ctx, size_t bytes) {
    size_t have = bytes;
    float *block = pool_reuse(ctx, bytes, &have);
    if (!block) {
        pool_trim(ctx, bytes);
        block = ctx->be->alloc(bytes);
        if (!block)
            out_of_memory(ctx, "out of memory on the %s: could not allocate %zu bytes for an "
                               "activation (a smaller input size or batch needs less)",
                          ctx->be->name, bytes);
        ctx->pool_bytes += bytes;
        if (ctx->pool_bytes > ctx->pool_peak) ctx->pool_peak = ctx->pool_bytes;
    }
    g_hash_table_insert(ctx->block_sizes, block, GSIZE_TO_POINTER(have));
    ctx->in_use += have;
    if (ctx->in_use > ctx->in_use_peak) ctx->in_use_peak = ctx->in_use;
    return block;
}

static void pool_give(cs_ctx *ctx, float *block) {
    const gpointer size = g_hash_table_lookup(ctx->block_sizes, block);
    g_assert(size && "a block the pool did not hand out");
    g_hash_table_remove(ctx->block_sizes, block);
    ctx->in_use -= GPOINTER_TO_SIZE(size);
    GSList *list = g_tree_lookup(ctx->free_blocks, size);
    g_tree_insert(ctx->free_blocks, size, g_slist_prepend(list, block));
}

static gboolean free_block_list(gpointer key, gpointer value, gpointer user) {
    (void)key;
    const cs_backend *be = user;
    for (GSList *l = value; l; l = l->next) be->release(l->data);
    g_slist_free(value);
    return FALSE;
}

size_t cs_ctx_pool_bytes(const cs_ctx *ctx) { return ctx->pool_peak; }

/* ---- context ---------------------------------------------------------------------- */

cs_ctx *cs_ctx_new(cs_paramset *params, const cs_backend *backend) {
    cs_cpu_threads(); /* thread pool and FTZ/DAZ set up once */
    cs_ctx *ctx = g_new0(cs_ctx, 1);
    ctx->be = backend ? backend : &cs_backend_cpu;
    ctx->params = params;
    ctx->live = g_ptr_array_new();
    ctx->tape = g_ptr_array_new();
    ctx->free_blocks = g_tree_new_full(size_compare, NULL, NULL, NULL);
    ctx->block_sizes = g_hash_table_new(g_direct_hash, g_direct_equal);
    if (g_getenv("CONDSEG_PROFILE"))
        ctx->profile = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return ctx;
}

static void grad_drop(cs_ctx *ctx, cs_tensor *t) {
    if (t->grad) pool_give(ctx, t->grad);
    t->grad = NULL;
}

static size_t bf16_block_size(const cs_tensor *t) { return block_size((cs_numel(t) + 1) / 2); }

void *cs_tensor_bf16_room(cs_ctx *ctx, cs_tensor *t) {
    if (!t->bf16) t->bf16 = pool_take(ctx, bf16_block_size(t));
    return t->bf16;
}

static void tensor_drop(cs_ctx *ctx, cs_tensor *t) {
    grad_drop(ctx, t);
    if (t->bf16) pool_give(ctx, t->bf16);
    if (t->data) pool_give(ctx, t->data);
    g_free(t);
}

static void tape_clear(cs_ctx *ctx) {
    for (guint i = 0; i < ctx->tape->len; i++) {
        cs_node *node = g_ptr_array_index(ctx->tape, i);
        g_free(node->saved);
        g_free(node);
    }
    g_ptr_array_set_size(ctx->tape, 0);
}

void cs_ctx_reset(cs_ctx *ctx) {
    tape_clear(ctx);
    for (guint i = 0; i < ctx->live->len; i++) tensor_drop(ctx, g_ptr_array_index(ctx->live, i));
    g_ptr_array_set_size(ctx->live, 0);
}

void cs_ctx_free(cs_ctx *ctx) {
    if (!ctx) return;
    if (ctx->profile) {
        profile_report(ctx);
        g_hash_table_destroy(ctx->profile);
    }
    cs_ctx_reset(ctx);
    g_tree_foreach(ctx->free_blocks, free_block_list, (gpointer)ctx->be);
    g_tree_destroy(ctx->free_blocks);
    g_hash_table_destroy(ctx->block_sizes);
    g_ptr_array_free(ctx->live, TRUE);
    g_ptr_array_free(ctx->tape, TRUE);
    if (ctx->workspace) ctx->be->release(ctx->workspace);
    g_free(ctx);
}

const cs_paramset *cs_ctx_params(const cs_ctx *ctx) { return ctx->params; }

double cs_ctx_conv_flops(const cs_ctx *ctx) { return ctx->conv_flops; }

void cs_ctx_set_training(cs_ctx *ctx, gboolean training) {
    g_assert(ctx->live->len == 0 && "switch modes between runs");
    ctx->training = training;
}

gboolean cs_ctx_training(const cs_ctx *ctx) { return ctx->training; }

void cs_ctx_set_bf16(cs_ctx *ctx, gboolean bf16) { ctx->bf16 = bf16; }
void cs_ctx_set_bn_reducer(cs_ctx *ctx, const struct cs_reducer *reducer) {
    ctx->bn_reducer = reducer;
}
void cs_ctx_set_weights_tag(cs_ctx *ctx, uint64_t tag) { ctx->weights_tag = tag; }

void cs_ctx_set_probe(cs_ctx *ctx, cs_probe_fn fn, void *user_data) {
    ctx->probe = fn;
    ctx->probe_user = user_data;
}

/* Probes see NCHW maps in host memory. An NHWC map is shown through an NCHW copy rather
 * than turned NCHW in place: a probe must not change which layouts the operations after
 * it meet (it made bench_infer's probed run slower than the others). */
/* Whether t's NHWC and NCHW bytes differ (they are the same for one channel or one pixel). */
static gboolean layouts_differ(const cs_tensor *t) { return t->c > 1 && t->h * t->w > 1; }

void cs_probe(cs_ctx *ctx, const char *name, const cs_tensor *t) {
    if (!ctx->probe) return;
    cs_tensor host = *t;
    host.nhwc = FALSE;
    host.grad = NULL;
    host.data = g_new(float, cs_numel(t));
    if (t->nhwc && layouts_differ(t)) {
        float *nchw = pool_take(ctx, block_size(cs_numel(t)));
        ctx->be->nhwc_to_nchw(nchw, t->data, t->n, t->c, t->h * t->w);
        ctx->be->download(host.data, nchw, sizeof(float) * cs_numel(t));
        pool_give(ctx, nchw);
    } else {
        ctx->be->download(host.data, t->data, sizeof(float) * cs_numel(t));
    }
    ctx->probe(name, &host, ctx->probe_user);
    g_free(host.data);
}

float *cs_ctx_workspace(cs_ctx *ctx, size_t floats) {
    if (floats > ctx->workspace_floats) {
        if (ctx->workspace) ctx->be->release(ctx->workspace);
        ctx->workspace = ctx->be->alloc(block_size(floats));
        if (!ctx->workspace) {
            ctx->workspace_floats = 0;
            out_of_memory(ctx, "out of memory on the %s: could not allocate %zu bytes of "
                               "convolution workspace", ctx->be->name, floats * sizeof(float));
        }
        ctx->workspace_floats = floats;
    }
    return ctx->workspace;
}

/* ---- tensors and scopes ------------------------------------------------------------ */

static cs_tensor *tensor_alloc(cs_ctx *ctx, int n, int c, int h, int w, gboolean requires_grad) {
    cs_tensor *t = g_new0(cs_tensor, 1);
    t->n = n, t->c = c, t->h = h, t->w = w;
    t->requires_grad = requires_grad;
    g_ptr_array_add(ctx->live, t);   /* first: a reset after running out of memory frees it */
    t->data = pool_take(ctx, block_size(cs_numel(t)));
    return t;
}

cs_tensor *cs_tensor_new(cs_ctx *ctx, int n, int c, int h, int w) {
    return tensor_alloc(ctx, n, c, h, w, ctx->training);
}

cs_tensor *cs_tensor_from(cs_ctx *ctx, const float *data, int n, int c, int h, int w) {
    cs_tensor *t = tensor_alloc(ctx, n, c, h, w, FALSE);
    ctx->be->upload(t->data, data, sizeof(float) * cs_numel(t));
    return t;
}

/* The bytes of t reordered to NCHW in place. */
static void make_nchw(cs_ctx *ctx, cs_tensor *t) {
    const size_t bytes = block_size(cs_numel(t));
    float *nchw = pool_take(ctx, bytes);
    PROFILED("NHWC to NCHW", ctx->be->nhwc_to_nchw(nchw, t->data, t->n, t->c, t->h * t->w));
    pool_give(ctx, t->data);
    t->data = nchw;
    t->nhwc = FALSE;
}

/* Inference: the bytes of NCHW t reordered to NHWC in place. */
void cs_tensor_make_nhwc(cs_ctx *ctx, const cs_tensor *t) {
    g_assert(!ctx->training && ctx->be->nchw_to_nhwc);
    cs_tensor *m = (cs_tensor *)t; /* the layout belongs to the storage (see below) */
    if (m->nhwc) return;
    if (m->c > 1 && m->h * m->w > 1) {
        float *nhwc = pool_take(ctx, block_size(cs_numel(m)));
        PROFILED("NCHW to NHWC",
                 ctx->be->nchw_to_nhwc(nhwc, m->data, m->n, m->c, m->h * m->w, 0));
        pool_give(ctx, m->data);
        m->data = nhwc;
    }
    m->nhwc = TRUE;
}

static void nchw_copy_backward(cs_ctx *ctx, const cs_node *node) {
    cs_tensor *x = node->in[0];
    if (!x->requires_grad) return;
    /* The first gradient to arrive is written, not added onto zeros. */
    const int first = x->grad == NULL;
    if (first) x->grad = pool_take(ctx, block_size(cs_numel(x)));
    ctx->be->nchw_to_nhwc(x->grad, node->out->grad, x->n, x->c, x->h * x->w, !first);
}

const cs_tensor *cs_tensor_nchw(cs_ctx *ctx, const cs_tensor *t) {
    if (!t->nhwc) return t;
    /* The layout belongs to the storage, not to the value the const promises. */
    cs_tensor *m = (cs_tensor *)t;
    if (!layouts_differ(m)) {
        m->nhwc = FALSE;
        return m;
    }
    if (!ctx->training) {
        make_nchw(ctx, m);
        return m;
    }
    if (!m->nchw) {
        cs_tensor *y = cs_tensor_new(ctx, m->n, m->c, m->h, m->w);
        PROFILED("NHWC to NCHW", ctx->be->nhwc_to_nchw(y->data, m->data, m->n, m->c, m->h * m->w));
        cs_tape_record(ctx, "NHWC to NCHW", nchw_copy_backward, y)->in[0] = m;
        m->nchw = y;
    }
    return m->nchw;
}

void cs_tensor_read(cs_ctx *ctx, const cs_tensor *t, float *host) {
    t = cs_tensor_nchw(ctx, t);
    ctx->be->download(host, t->data, sizeof(float) * cs_numel(t));
}

void cs_tensor_set_grad(cs_ctx *ctx, cs_tensor *t, const float *host) {
    if (t->nhwc && layouts_differ(t)) g_error("internal error: a host gradient for an NHWC map");
    ctx->be->upload(cs_tensor_grad(ctx, t), host, sizeof(float) * cs_numel(t));
}

/* In training every activation may be needed by the backward pass: nothing is given
 * back before cs_ctx_reset. */
void cs_release(cs_ctx *ctx, cs_tensor *t) {
    if (ctx->training) return;
    for (guint i = ctx->live->len; i-- > 0;) {
        if (g_ptr_array_index(ctx->live, i) == t) {
            g_ptr_array_remove_index(ctx->live, i);
            tensor_drop(ctx, t);
            return;
        }
    }
    g_error("internal error: releasing a tensor that is not live");
}

cs_scope cs_scope_begin(cs_ctx *ctx) { return ctx->live->len; }

cs_tensor *cs_scope_end(cs_ctx *ctx, cs_scope scope, cs_tensor *keep) {
    if (ctx->training) return keep;
    guint kept = scope;
    for (guint i = scope; i < ctx->live->len; i++) {
        cs_tensor *t = g_ptr_array_index(ctx->live, i);
        if (t == keep) g_ptr_array_index(ctx->live, kept++) = t;
        else tensor_drop(ctx, t);
    }
    g_ptr_array_set_size(ctx->live, kept);
    return keep;
}

/* ---- the tape ------------------------------------------------------------------------ */

cs_node *cs_tape_record(cs_ctx *ctx, const char *kind, cs_backward_fn backward, cs_tensor *out) {
    if (!ctx->training) return NULL;
    cs_node *node = g_new0(cs_node, 1);
    node->backward = backward;
    node->kind = kind;
    node->out = out;
    g_ptr_array_add(ctx->tape, node);
    return node;
}

float *cs_grad_of(cs_ctx *ctx, cs_tensor *t) {
    if (!t->requires_grad) return NULL;
    if (!t->grad) {
        t->grad = pool_take(ctx, block_size(cs_numel(t)));
        ctx->be->zero(t->grad, sizeof(float) * cs_numel(t));
    }
    return t->grad;
}

float *cs_tensor_grad(cs_ctx *ctx, cs_tensor *t) {
    g_assert(t->requires_grad);
    return cs_grad_of(ctx, t);
}

float *cs_param_grad(cs_ctx *ctx, const cs_param *p) {
    g_assert(p->kind == CS_PARAM && ctx->params->dev_grads);
    return ctx->params->dev_grads + p->offset;
}

float *cs_param_values(const cs_ctx *ctx, const cs_param *p) {
    g_assert(p->kind != CS_COUNTER && ctx->params->dev_values);
    return ctx->params->dev_values + p->offset;
}

void cs_backward(cs_ctx *ctx) {
    g_assert(ctx->params->dev_grads && "cs_paramset_enable_grads first");
    for (guint i = ctx->tape->len; i-- > 0;) {
        cs_node *node = g_ptr_array_index(ctx->tape, i);
        if (!node->out->grad) continue; /* nothing flows back through this branch */
        gint64 t0 = cs_profile_start(ctx);
        node->backward(ctx, node);
        if (ctx->profile) {
            char kind[48];
            g_snprintf(kind, sizeof kind, "%s backward", node->kind);
            cs_profile_end(ctx, kind, t0, 0.0);
        }
        /* Every consumer of this output came later on the tape and is done. */
        grad_drop(ctx, node->out);
    }
}
