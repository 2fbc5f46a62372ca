/* graph.c — the execution context: a caching pool for activations (a second forward of
 * the same shape allocates nothing), scopes, probes, and the tensor-level operations,
 * which check shapes, allocate outputs and call the kernels. */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cs_math.h"
#include "kernels.h"

struct cs_ctx {
    const cs_paramset *params;
    GPtrArray *live;              /* cs_tensor *, in creation order (scopes index it) */
    GHashTable *free_blocks;      /* block size -> GSList of free blocks */
    size_t pool_bytes, pool_peak;
    float *workspace;             /* conv scratch, grown on demand */
    size_t workspace_floats;
    cs_probe_fn probe;
    void *probe_user;
    GHashTable *profile;          /* CONDSEG_PROFILE set: op kind -> op_time */
};

/* ---- profile: where the time goes, per kind of operation ----------------------------- */

typedef struct {
    double seconds, gflop;
    long calls;
} op_time;

static gint64 profile_start(const cs_ctx *ctx) { return ctx->profile ? g_get_monotonic_time() : 0; }

static void profile_end(cs_ctx *ctx, const char *kind, gint64 start, double gflop) {
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

/* Runs `call`, charging its time to `kind` (ctx must be in scope). */
#define PROFILED(kind, call)                        \
    do {                                            \
        gint64 t0_ = profile_start(ctx);            \
        call;                                       \
        profile_end(ctx, kind, t0_, 0.0);           \
    } while (0)

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
    fprintf(stderr, "condseg profile (all runs of this context): %.3f s in operations\n", total);
    for (GList *k = kinds; k; k = k->next) {
        const op_time *t = g_hash_table_lookup(ctx->profile, k->data);
        fprintf(stderr, "  %-16s %8.1f ms %5.1f%% %6ld calls", (const char *)k->data,
                t->seconds * 1e3, 100 * t->seconds / total, t->calls);
        if (t->gflop > 0) fprintf(stderr, " %7.1f GFLOP/s", t->gflop / t->seconds);
        fputc('\n', stderr);
    }
    g_list_free(kinds);
}

/* ---- pool ------------------------------------------------------------------------- */

static size_t block_size(size_t floats) { return (floats * sizeof(float) + 63) / 64 * 64; }

static float *pool_take(cs_ctx *ctx, size_t bytes) {
    GSList *list = g_hash_table_lookup(ctx->free_blocks, GSIZE_TO_POINTER(bytes));
    if (list) {
        float *block = list->data;
        g_hash_table_insert(ctx->free_blocks, GSIZE_TO_POINTER(bytes),
                            g_slist_delete_link(list, list));
        return block;
    }
    float *block = aligned_alloc(64, bytes ? bytes : 64);
    if (!block) g_error("out of memory: could not allocate %zu bytes for an activation", bytes);
    ctx->pool_bytes += bytes;
    if (ctx->pool_bytes > ctx->pool_peak) ctx->pool_peak = ctx->pool_bytes;
    return block;
}

static void pool_give(cs_ctx *ctx, float *block, size_t bytes) {
    GSList *list = g_hash_table_lookup(ctx->free_blocks, GSIZE_TO_POINTER(bytes));
    g_hash_table_insert(ctx->free_blocks, GSIZE_TO_POINTER(bytes), g_slist_prepend(list, block));
}

static void free_block_list(gpointer key, gpointer value, gpointer user) {
    (void)key, (void)user;
    g_slist_free_full(value, free);
}

size_t cs_ctx_pool_bytes(const cs_ctx *ctx) { return ctx->pool_peak; }

/* ---- context ---------------------------------------------------------------------- */

cs_ctx *cs_ctx_new(const cs_paramset *params) {
    cs_cpu_threads(); /* thread pool and FTZ/DAZ set up once */
    cs_ctx *ctx = g_new0(cs_ctx, 1);
    ctx->params = params;
    ctx->live = g_ptr_array_new();
    ctx->free_blocks = g_hash_table_new(g_direct_hash, g_direct_equal);
    if (g_getenv("CONDSEG_PROFILE"))
        ctx->profile = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return ctx;
}

static void tensor_drop(cs_ctx *ctx, cs_tensor *t) {
    pool_give(ctx, t->data, block_size(cs_numel(t)));
    g_free(t);
}

void cs_ctx_reset(cs_ctx *ctx) {
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
    g_hash_table_foreach(ctx->free_blocks, free_block_list, NULL);
    g_hash_table_destroy(ctx->free_blocks);
    g_ptr_array_free(ctx->live, TRUE);
    free(ctx->workspace);
    g_free(ctx);
}

const cs_paramset *cs_ctx_params(const cs_ctx *ctx) { return ctx->params; }

void cs_ctx_set_probe(cs_ctx *ctx, cs_probe_fn fn, void *user_data) {
    ctx->probe = fn;
    ctx->probe_user = user_data;
}

void cs_probe(cs_ctx *ctx, const char *name, const cs_tensor *t) {
    if (ctx->probe) ctx->probe(name, t, ctx->probe_user);
}

static float *workspace(cs_ctx *ctx, size_t floats) {
    if (floats > ctx->workspace_floats) {
        free(ctx->workspace);
        ctx->workspace = aligned_alloc(64, block_size(floats));
        if (!ctx->workspace) g_error("out of memory: conv workspace of %zu floats", floats);
        ctx->workspace_floats = floats;
    }
    return ctx->workspace;
}

/* ---- tensors and scopes ------------------------------------------------------------ */

cs_tensor *cs_tensor_new(cs_ctx *ctx, int n, int c, int h, int w) {
    cs_tensor *t = g_new(cs_tensor, 1);
    t->n = n, t->c = c, t->h = h, t->w = w;
    t->data = pool_take(ctx, block_size(cs_numel(t)));
    g_ptr_array_add(ctx->live, t);
    return t;
}

cs_tensor *cs_tensor_from(cs_ctx *ctx, const float *data, int n, int c, int h, int w) {
    cs_tensor *t = cs_tensor_new(ctx, n, c, h, w);
    memcpy(t->data, data, sizeof(float) * cs_numel(t));
    return t;
}

void cs_release(cs_ctx *ctx, cs_tensor *t) {
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
    guint kept = scope;
    for (guint i = scope; i < ctx->live->len; i++) {
        cs_tensor *t = g_ptr_array_index(ctx->live, i);
        if (t == keep) g_ptr_array_index(ctx->live, kept++) = t;
        else tensor_drop(ctx, t);
    }
    g_ptr_array_set_size(ctx->live, kept);
    return keep;
}

/* ---- operations -------------------------------------------------------------------- */

static void check_same_shape(const cs_tensor *a, const cs_tensor *b, const char *op) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        g_error("internal error: %s of %dx%dx%dx%d and %dx%dx%dx%d", op, a->n, a->c, a->h, a->w,
                b->n, b->c, b->h, b->w);
}

/* A conv or Linear weight: O x C x k x k, or out x in (a 1x1 kernel). */
static const cs_param *conv_weight(cs_ctx *ctx, const char *name, const cs_tensor *x,
                                   int *out_channels, int *kernel) {
    const cs_param *w = cs_param_get(ctx->params, name);
    if (w->ndim != 4 && w->ndim != 2) g_error("internal error: %s is not a weight", name);
    if (w->shape[1] != x->c)
        g_error("internal error: %s expects %d input channels, got %d", name,
                (int)w->shape[1], x->c);
    *out_channels = (int)w->shape[0];
    *kernel = w->ndim == 4 ? (int)w->shape[2] : 1;
    return w;
}

static cs_tensor *conv_run(cs_ctx *ctx, const cs_tensor *x, const char *weight_name, int stride,
                           int pad, int dil, const float *scale, const float *shift, int relu) {
    int o, k;
    const cs_param *w = conv_weight(ctx, weight_name, x, &o, &k);
    cs_conv_shape s = {.n = x->n, .c = x->c, .h = x->h, .w = x->w, .o = o, .k = k,
                       .stride = stride, .pad = pad, .dil = dil};
    cs_conv_geometry(&s);
    cs_tensor *y = cs_tensor_new(ctx, x->n, o, s.ho, s.wo);
    float *ws = workspace(ctx, cs_cpu_conv2d_workspace(&s));
    gint64 t0 = profile_start(ctx);
    cs_cpu_conv2d_forward(y->data, x->data, w->data, scale, shift, &s, relu, ws);
    if (ctx->profile) {
        char kind[32];
        g_snprintf(kind, sizeof kind, "conv%dx%d%s%s", k, k, dil > 1 ? " dilated" : "",
                   stride > 1 ? " s2" : "");
        profile_end(ctx, kind, t0, 2e-9 * (double)cs_numel(y) * x->c * k * k);
    }
    return y;
}

cs_tensor *cs_conv2d(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                     const char *bias_name, int stride, int pad, int dil) {
    const float *bias = bias_name ? cs_param_get(ctx->params, bias_name)->data : NULL;
    return conv_run(ctx, x, weight_name, stride, pad, dil, NULL, bias, 0);
}

/* Eval-mode BatchNorm `prefix` as per-channel scale and shift (2*c floats). */
static void bn_folded(cs_ctx *ctx, const char *prefix, int c, float *scale, float *shift) {
    char name[256];
#define BN_FIELD(field) \
    (g_snprintf(name, sizeof name, "%s." field, prefix), cs_param_get(ctx->params, name))
    const cs_param *gamma = BN_FIELD("weight"), *beta = BN_FIELD("bias");
    const cs_param *mean = BN_FIELD("running_mean"), *var = BN_FIELD("running_var");
#undef BN_FIELD
    if (gamma->numel != c) g_error("internal error: %s has %d channels, input %d", prefix,
                                   (int)gamma->numel, c);
    for (int i = 0; i < c; i++)
        csm_bn_fold(gamma->data[i], beta->data[i], mean->data[i], var->data[i], &scale[i],
                    &shift[i]);
}

cs_tensor *cs_conv2d_bn(cs_ctx *ctx, const cs_tensor *x, const char *weight_name,
                        const char *bn_prefix, int stride, int pad, int dil, int relu) {
    const int o = (int)cs_param_get(ctx->params, weight_name)->shape[0];
    float *affine = g_new(float, 2 * o);
    bn_folded(ctx, bn_prefix, o, affine, affine + o);
    cs_tensor *y = conv_run(ctx, x, weight_name, stride, pad, dil, affine, affine + o, relu);
    g_free(affine);
    return y;
}

cs_tensor *cs_batchnorm(cs_ctx *ctx, const cs_tensor *x, const char *bn_prefix, int relu) {
    float *affine = g_new(float, 2 * x->c);
    bn_folded(ctx, bn_prefix, x->c, affine, affine + x->c);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    PROFILED("batchnorm", cs_cpu_channel_affine(y->data, x->data, affine, affine + x->c, x->n, x->c, x->h * x->w,
                          relu));
    g_free(affine);
    return y;
}

cs_tensor *cs_linear(cs_ctx *ctx, const cs_tensor *x, const char *prefix) {
    char weight[256], bias[256];
    g_snprintf(weight, sizeof weight, "%s.weight", prefix);
    g_snprintf(bias, sizeof bias, "%s.bias", prefix);
    return cs_conv2d(ctx, x, weight, bias, 1, 0, 1);
}

cs_tensor *cs_relu(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    PROFILED("relu", cs_cpu_relu(y->data, x->data, cs_numel(x)));
    return y;
}

cs_tensor *cs_sigmoid(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    PROFILED("sigmoid", cs_cpu_sigmoid(y->data, x->data, cs_numel(x)));
    return y;
}

cs_tensor *cs_add(cs_ctx *ctx, const cs_tensor *a, const cs_tensor *b, int relu) {
    check_same_shape(a, b, "add");
    cs_tensor *y = cs_tensor_new(ctx, a->n, a->c, a->h, a->w);
    PROFILED("add", cs_cpu_add(y->data, a->data, b->data, cs_numel(a), relu));
    return y;
}

cs_tensor *cs_mul_channel(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *s) {
    if (s->n != x->n || s->c != x->c || s->h != 1 || s->w != 1)
        g_error("internal error: channel product with a %dx%dx%dx%d factor", s->n, s->c, s->h,
                s->w);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    PROFILED("mul_channel", cs_cpu_mul_channel(y->data, x->data, s->data, x->n, x->c, x->h * x->w));
    return y;
}

cs_tensor *cs_mul_spatial(cs_ctx *ctx, const cs_tensor *x, const cs_tensor *m) {
    if (m->n != x->n || m->c != 1 || m->h != x->h || m->w != x->w)
        g_error("internal error: spatial product with a %dx%dx%dx%d factor", m->n, m->c, m->h,
                m->w);
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
    PROFILED("mul_spatial", cs_cpu_mul_spatial(y->data, x->data, m->data, x->n, x->c, x->h * x->w));
    return y;
}

cs_tensor *cs_concat(cs_ctx *ctx, int count, const cs_tensor *const *parts) {
    int c = 0;
    for (int i = 0; i < count; i++) {
        if (parts[i]->n != parts[0]->n || parts[i]->h != parts[0]->h ||
            parts[i]->w != parts[0]->w)
            g_error("internal error: concatenating maps of different sizes");
        c += parts[i]->c;
    }
    const cs_tensor *p0 = parts[0];
    cs_tensor *y = cs_tensor_new(ctx, p0->n, c, p0->h, p0->w);
    for (int i = 0, c0 = 0; i < count; c0 += parts[i]->c, i++)
        PROFILED("concat", cs_cpu_copy_channels(y->data, c, c0, parts[i]->data, parts[i]->c, p0->n, p0->h * p0->w));
    return y;
}

cs_tensor *cs_upsample(cs_ctx *ctx, const cs_tensor *x, int factor) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, x->h * factor, x->w * factor);
    PROFILED("upsample_bilinear", cs_cpu_upsample_bilinear(y->data, x->data, x->n, x->c, x->h, x->w, y->h, y->w));
    return y;
}

cs_tensor *cs_maxpool3s2(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, (x->h - 1) / 2 + 1, (x->w - 1) / 2 + 1);
    PROFILED("maxpool3s2", cs_cpu_maxpool3s2(y->data, x->data, x->n, x->c, x->h, x->w, y->h, y->w));
    return y;
}

cs_tensor *cs_global_avgpool(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, 1, 1);
    PROFILED("global_avgpool", cs_cpu_global_avgpool(y->data, x->data, x->n, x->c, x->h * x->w));
    return y;
}

cs_tensor *cs_global_maxpool(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, x->c, 1, 1);
    PROFILED("global_maxpool", cs_cpu_global_maxpool(y->data, x->data, x->n, x->c, x->h * x->w));
    return y;
}

cs_tensor *cs_channel_mean(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, 1, x->h, x->w);
    PROFILED("channel_mean", cs_cpu_channel_mean(y->data, x->data, x->n, x->c, x->h * x->w));
    return y;
}

cs_tensor *cs_channel_max(cs_ctx *ctx, const cs_tensor *x) {
    cs_tensor *y = cs_tensor_new(ctx, x->n, 1, x->h, x->w);
    PROFILED("channel_max", cs_cpu_channel_max(y->data, x->data, x->n, x->c, x->h * x->w));
    return y;
}

cs_tensor *cs_outlook_attention(cs_ctx *ctx, const cs_tensor *v, const cs_tensor *a,
                                int heads) {
    if (a->n != v->n || a->c != heads * 81 || a->h != v->h || a->w != v->w || v->c % heads)
        g_error("internal error: outlook attention over %d heads of %dx%dx%dx%d logits", heads,
                a->n, a->c, a->h, a->w);
    cs_tensor *y = cs_tensor_new(ctx, v->n, v->c, v->h, v->w);
    cs_tensor *prob = cs_tensor_new(ctx, a->n, a->c, a->h, a->w);
    const float scale = 1.0f / sqrtf((float)(v->c / heads));
    PROFILED("outlook_attention", cs_cpu_outlook_attention(y->data, prob->data, v->data, a->data, v->n, v->c, heads, v->h,
                             v->w, scale));
    cs_release(ctx, prob); /* the backward pass will keep it */
    return y;
}
