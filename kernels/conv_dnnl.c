/* conv_dnnl.c — 2-D convolution on the CPU through oneDNN's primitives (Debian's
 * libdnnl 2.6): forward with the scale/shift + ReLU epilogue as post-ops, backward-data
 * and backward-weights, in float32 or with bfloat16 inputs (AMX / AVX512-BF16) and float32
 * accumulation.
 *
 * condseg's activations are NCHW; oneDNN's fast kernels (brgconv) want NHWC. Each call
 * reorders its inputs into NHWC scratch (in the convolution's input precision, so the
 * bfloat16 rounding is that reorder) and its output back: one pass over each, which costs
 * less than the k*k-fold im2col matrix it replaces. Primitives are made once per shape
 * and kept (a network has a few dozen shapes); weights are reordered into the layout the
 * primitive chose on every call, or once per weights tag (inference: once per model).
 * Primitives hold no per-call state, so convolutions may run concurrently.
 */
#include <dnnl.h>
#include <glib.h>
#include <string.h>

#include "conv_dnnl.h"

enum { PASS_FORWARD, PASS_BACKWARD_DATA, PASS_BACKWARD_WEIGHTS, PASS_TO_NCHW };
enum { EPI_SCALE = 1, EPI_SHIFT = 2, EPI_RELU = 4 };

/* Everything that makes a primitive: all ints, compared and hashed as bytes. */
typedef struct {
    int n, c, h, w, o, k, stride, pad, dil, bf16, pass, epilogue;
} plan_key;

typedef struct {
    dnnl_primitive_t conv;
    dnnl_memory_desc_t weights_md;    /* the primitive's (diff) weights layout */
    dnnl_primitive_t weights_reorder; /* OIHW f32 <-> weights_md (backward-weights: sum) */
    /* NCHW f32 -> NHWC: forward x; backward-weights x and dy. NHWC f32 -> NCHW: forward y;
     * backward-data dx (a sum: gradients accumulate). Forward in bf16: NHWC f32 -> bf16
     * (in_nhwc). The layout pass: out. */
    dnnl_primitive_t in[2], out, in_nhwc;
} plan;

static dnnl_engine_t engine;
static GMutex cache_lock;
static GHashTable *plans;            /* plan_key -> plan */
static GHashTable *weights_cache;    /* weights_key -> reordered weights */
static guint64 last_tag;
/* One stream per thread that runs convolutions (a stream is not for concurrent use). */
static void stream_destroy(gpointer stream) { dnnl_stream_destroy(stream); }
static GPrivate thread_stream = G_PRIVATE_INIT(stream_destroy);

#define DNNL_CHECK(call)                                                                 \
    do {                                                                                 \
        dnnl_status_t st_ = (call);                                                      \
        if (st_ != dnnl_success)                                                         \
            g_error("oneDNN: %s failed (status %d)", #call, (int)st_);                   \
    } while (0)

static guint bytes_hash(const void *p, size_t n) {
    const unsigned char *b = p;
    guint h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}
static guint plan_key_hash(gconstpointer k) { return bytes_hash(k, sizeof(plan_key)); }
static gboolean plan_key_equal(gconstpointer a, gconstpointer b) {
    return memcmp(a, b, sizeof(plan_key)) == 0;
}

static void engine_init(void) {
    if (g_once_init_enter(&engine)) {
        dnnl_engine_t e;
        DNNL_CHECK(dnnl_engine_create(&e, dnnl_cpu, 0));
        plans = g_hash_table_new_full(plan_key_hash, plan_key_equal, g_free, NULL);
        g_once_init_leave(&engine, e);
    }
}

const char *cs_cpu_bf16_unsupported(void) {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
        (unsigned)dnnl_cpu_isa_avx512_core_bf16)
        return NULL;
    return "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)";
}

/* ---- memory descriptors ---------------------------------------------------------------- */

static dnnl_data_type_t input_type(const cs_conv_shape *s) { return s->bf16 ? dnnl_bf16 : dnnl_f32; }

static dnnl_memory_desc_t plain_md(int a, int b, int c, int d, dnnl_data_type_t dt,
                                   dnnl_format_tag_t tag) {
    dnnl_memory_desc_t md;
    const dnnl_dims_t dims = {a, b, c, d};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&md, 4, dims, dt, tag));
    return md;
}

static dnnl_memory_desc_t src_md(const cs_conv_shape *s, dnnl_data_type_t dt, dnnl_format_tag_t t) {
    return plain_md(s->n, s->c, s->h, s->w, dt, t);
}
static dnnl_memory_desc_t dst_md(const cs_conv_shape *s, dnnl_data_type_t dt, dnnl_format_tag_t t) {
    return plain_md(s->n, s->o, s->ho, s->wo, dt, t);
}
static dnnl_memory_desc_t weights_any_md(const cs_conv_shape *s, dnnl_data_type_t dt) {
    return plain_md(s->o, s->c, s->k, s->k, dt, dnnl_format_tag_any);
}

static size_t floats_of(size_t bytes) { return (bytes + 63) / 64 * 16; }
static size_t nhwc_in_bytes(const cs_conv_shape *s) {
    return (size_t)s->n * s->c * s->h * s->w * (s->bf16 ? 2 : 4);
}
static size_t nhwc_out_bytes(const cs_conv_shape *s, int bf16) {
    return (size_t)s->n * s->o * s->ho * s->wo * (bf16 ? 2 : 4);
}

/* ---- primitives -------------------------------------------------------------------------- */

static dnnl_primitive_t primitive_from(const_dnnl_op_desc_t desc, const_dnnl_primitive_attr_t attr,
                                       const_dnnl_primitive_desc_t hint,
                                       dnnl_primitive_desc_t *pd_out) {
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, desc, attr, engine, hint));
    dnnl_primitive_t p;
    DNNL_CHECK(dnnl_primitive_create(&p, pd));
    if (pd_out) *pd_out = pd;
    else dnnl_primitive_desc_destroy(pd);
    return p;
}

static dnnl_primitive_t reorder_between(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                        int accumulate) {
    dnnl_primitive_attr_t attr = NULL;
    if (accumulate) {
        dnnl_post_ops_t po;
        DNNL_CHECK(dnnl_post_ops_create(&po));
        DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
        DNNL_CHECK(dnnl_primitive_attr_create(&attr));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr));
    dnnl_primitive_t p;
    DNNL_CHECK(dnnl_primitive_create(&p, pd));
    dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return p;
}

/* oneDNN's right padding: what makes its output size PyTorch's floor formula exactly. */
static void conv_desc_geometry(const cs_conv_shape *s, dnnl_dims_t strides, dnnl_dims_t dilates,
                               dnnl_dims_t pad_l, dnnl_dims_t pad_r) {
    const int extent = (s->k - 1) * s->dil + 1;
    const int right_h = (s->ho - 1) * s->stride + extent - s->h - s->pad;
    const int right_w = (s->wo - 1) * s->stride + extent - s->w - s->pad;
    strides[0] = strides[1] = s->stride;
    dilates[0] = dilates[1] = s->dil - 1;
    pad_l[0] = pad_l[1] = s->pad;
    pad_r[0] = right_h >= 0 ? right_h : s->pad;
    pad_r[1] = right_w >= 0 ? right_w : s->pad;
}

static dnnl_convolution_desc_t forward_desc(const cs_conv_shape *s, dnnl_prop_kind_t prop,
                                            int with_bias) {
    dnnl_dims_t st, dil, pl, pr;
    conv_desc_geometry(s, st, dil, pl, pr);
    const dnnl_memory_desc_t x = src_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t w = weights_any_md(s, input_type(s));
    const dnnl_memory_desc_t y = dst_md(s, dnnl_f32, dnnl_nhwc);
    dnnl_memory_desc_t b;
    const dnnl_dims_t bdims = {s->o};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&b, 1, bdims, dnnl_f32, dnnl_a));
    dnnl_convolution_desc_t d;
    DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(&d, prop, dnnl_convolution_direct, &x,
                                                          &w, with_bias ? &b : NULL, &y, st,
                                                          dil, pl, pr));
    return d;
}

/* Per-channel scale (binary mul) and shift (binary add) after the GEMM, then ReLU; a shift
 * alone is the convolution's bias. */
static dnnl_primitive_attr_t epilogue_attr(const cs_conv_shape *s, int epilogue) {
    dnnl_post_ops_t po;
    DNNL_CHECK(dnnl_post_ops_create(&po));
    const dnnl_memory_desc_t per_channel = plain_md(1, s->o, 1, 1, dnnl_f32, dnnl_nchw);
    if (epilogue & EPI_SCALE) {
        DNNL_CHECK(dnnl_post_ops_append_binary(po, dnnl_binary_mul, &per_channel));
        if (epilogue & EPI_SHIFT)
            DNNL_CHECK(dnnl_post_ops_append_binary(po, dnnl_binary_add, &per_channel));
    }
    if (epilogue & EPI_RELU)
        DNNL_CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_post_ops_destroy(po);
    return attr;
}

static void plan_finish(plan *p, dnnl_primitive_desc_t pd, dnnl_query_t weights_query, int pass,
                        const cs_conv_shape *s) {
    p->weights_md = *dnnl_primitive_desc_query_md(pd, weights_query, 0);
    const dnnl_memory_desc_t oihw = plain_md(s->o, s->c, s->k, s->k, dnnl_f32, dnnl_oihw);
    p->weights_reorder = pass == PASS_BACKWARD_WEIGHTS
                             ? reorder_between(&p->weights_md, &oihw, 1)
                             : reorder_between(&oihw, &p->weights_md, 0);
    const dnnl_data_type_t dt = input_type(s);
    const dnnl_memory_desc_t x = src_md(s, dnnl_f32, dnnl_nchw), xs = src_md(s, dt, dnnl_nhwc);
    const dnnl_memory_desc_t y = dst_md(s, dnnl_f32, dnnl_nchw), ys = dst_md(s, dt, dnnl_nhwc);
    const dnnl_memory_desc_t y32 = dst_md(s, dnnl_f32, dnnl_nhwc);
    const dnnl_memory_desc_t dx = src_md(s, dnnl_f32, dnnl_nhwc);
    if (pass == PASS_FORWARD) {
        const dnnl_memory_desc_t x32 = src_md(s, dnnl_f32, dnnl_nhwc);
        p->in[0] = reorder_between(&x, &xs, 0);
        p->out = reorder_between(&y32, &y, 0);
        if (s->bf16) p->in_nhwc = reorder_between(&x32, &xs, 0);
    } else if (pass == PASS_BACKWARD_WEIGHTS) {
        p->in[0] = reorder_between(&x, &xs, 0);
        p->in[1] = reorder_between(&y, &ys, 0);
    } else {
        p->out = reorder_between(&dx, &x, 1);
    }
    dnnl_primitive_desc_destroy(pd);
}

static plan *plan_forward(const cs_conv_shape *s, int epilogue) {
    plan *p = g_new0(plan, 1);
    const int bias = (epilogue & EPI_SHIFT) && !(epilogue & EPI_SCALE);
    dnnl_convolution_desc_t d = forward_desc(s, dnnl_forward_inference, bias);
    dnnl_primitive_attr_t attr = epilogue_attr(s, epilogue);
    dnnl_primitive_desc_t pd;
    p->conv = primitive_from(&d, attr, NULL, &pd);
    dnnl_primitive_attr_destroy(attr);
    plan_finish(p, pd, dnnl_query_weights_md, PASS_FORWARD, s);
    return p;
}

static plan *plan_backward(const cs_conv_shape *s, int pass) {
    plan *p = g_new0(plan, 1);
    dnnl_convolution_desc_t fd = forward_desc(s, dnnl_forward_training, 0);
    dnnl_primitive_desc_t hint;
    DNNL_CHECK(dnnl_primitive_desc_create(&hint, &fd, NULL, engine, NULL));
    dnnl_dims_t st, dil, pl, pr;
    conv_desc_geometry(s, st, dil, pl, pr);
    const dnnl_memory_desc_t x = src_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t dx = src_md(s, dnnl_f32, dnnl_nhwc);
    const dnnl_memory_desc_t dy = dst_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t w = weights_any_md(s, input_type(s));
    const dnnl_memory_desc_t dw = weights_any_md(s, dnnl_f32);
    dnnl_convolution_desc_t d;
    if (pass == PASS_BACKWARD_DATA)
        DNNL_CHECK(dnnl_dilated_convolution_backward_data_desc_init(
            &d, dnnl_convolution_direct, &dx, &w, &dy, st, dil, pl, pr));
    else
        DNNL_CHECK(dnnl_dilated_convolution_backward_weights_desc_init(
            &d, dnnl_convolution_direct, &x, &dw, NULL, &dy, st, dil, pl, pr));
    dnnl_primitive_desc_t pd;
    p->conv = primitive_from(&d, NULL, hint, &pd);
    dnnl_primitive_desc_destroy(hint);
    plan_finish(p, pd, pass == PASS_BACKWARD_DATA ? dnnl_query_weights_md
                                                  : dnnl_query_diff_weights_md, pass, s);
    return p;
}

/* The layout pass back to NCHW of an n x c x hw map (only `out` is set). */
static plan *plan_to_nchw(const cs_conv_shape *s) {
    plan *p = g_new0(plan, 1);
    const dnnl_memory_desc_t from = plain_md(s->n, s->c, s->h, 1, dnnl_f32, dnnl_nhwc);
    const dnnl_memory_desc_t to = plain_md(s->n, s->c, s->h, 1, dnnl_f32, dnnl_nchw);
    p->out = reorder_between(&from, &to, 0);
    return p;
}

static plan *plan_new(const cs_conv_shape *s, int pass, int epilogue) {
    switch (pass) {
    case PASS_FORWARD: return plan_forward(s, epilogue);
    case PASS_TO_NCHW: return plan_to_nchw(s);
    default: return plan_backward(s, pass);
    }
}

static const plan *plan_get(const cs_conv_shape *s, int pass, int epilogue) {
    engine_init();
    plan_key key = {s->n, s->c, s->h, s->w, s->o, s->k, s->stride, s->pad, s->dil, !!s->bf16,
                    pass, epilogue};
    g_mutex_lock(&cache_lock);
    plan *p = g_hash_table_lookup(plans, &key);
    if (!p) {
        p = plan_new(s, pass, epilogue);
        g_hash_table_insert(plans, g_memdup2(&key, sizeof key), p);
    }
    g_mutex_unlock(&cache_lock);
    return p;
}

/* ---- execution ----------------------------------------------------------------------------- */

static dnnl_memory_t memory_at(const dnnl_memory_desc_t *md, const void *data) {
    dnnl_memory_t m;
    DNNL_CHECK(dnnl_memory_create(&m, md, engine, (void *)data));
    return m;
}

static void run(dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args) {
    dnnl_stream_t stream = g_private_get(&thread_stream);
    if (!stream) {
        DNNL_CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
        g_private_set(&thread_stream, stream);
    }
    DNNL_CHECK(dnnl_primitive_execute(prim, stream, nargs, args));
    DNNL_CHECK(dnnl_stream_wait(stream));
}

/* Runs reorder `r` from `from` (layout from_md) to `to` (to_md). */
static void reorder_run(dnnl_primitive_t r, const dnnl_memory_desc_t *from_md, const void *from,
                        const dnnl_memory_desc_t *to_md, void *to) {
    dnnl_memory_t a = memory_at(from_md, from), b = memory_at(to_md, to);
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
    run(r, 2, args);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
}

static void weights_reorder_run(const plan *p, const cs_conv_shape *s, const float *oihw,
                                void *blocked, int to_oihw) {
    const dnnl_memory_desc_t plain = plain_md(s->o, s->c, s->k, s->k, dnnl_f32, dnnl_oihw);
    if (to_oihw) reorder_run(p->weights_reorder, &p->weights_md, blocked, &plain, (void *)oihw);
    else reorder_run(p->weights_reorder, &plain, oihw, &p->weights_md, blocked);
}

/* ---- the weights cache (tagged weights: reordered once) ---------------------------------- */

typedef struct {
    const float *w;
    const plan *p;
    guint64 tag;
} weights_key;

static guint weights_key_hash(gconstpointer k) { return bytes_hash(k, sizeof(weights_key)); }
static gboolean weights_key_equal(gconstpointer a, gconstpointer b) {
    return memcmp(a, b, sizeof(weights_key)) == 0;
}

uint64_t cs_cpu_conv_new_tag(void) {
    g_mutex_lock(&cache_lock);
    const uint64_t tag = ++last_tag;
    g_mutex_unlock(&cache_lock);
    return tag;
}

static gboolean has_tag(gpointer key, gpointer value, gpointer tag) {
    (void)value;
    return ((const weights_key *)key)->tag == *(const guint64 *)tag;
}

void cs_cpu_conv_forget(uint64_t weights_tag) {
    if (!weights_tag) return;
    g_mutex_lock(&cache_lock);
    if (weights_cache) g_hash_table_foreach_remove(weights_cache, has_tag, &weights_tag);
    g_mutex_unlock(&cache_lock);
}

/* The weights in the plan's layout: from the cache when tagged, else reordered into
 * `scratch`. */
static const void *weights_for(const plan *p, const cs_conv_shape *s, const float *w,
                               void *scratch) {
    if (!s->weights_tag) {
        weights_reorder_run(p, s, w, scratch, 0);
        return scratch;
    }
    weights_key key;
    memset(&key, 0, sizeof key);
    key.w = w, key.p = p, key.tag = s->weights_tag;
    g_mutex_lock(&cache_lock);
    if (!weights_cache)
        weights_cache = g_hash_table_new_full(weights_key_hash, weights_key_equal, g_free, g_free);
    void *cached = g_hash_table_lookup(weights_cache, &key);
    if (!cached) {
        cached = g_malloc(dnnl_memory_desc_get_size(&p->weights_md));
        weights_reorder_run(p, s, w, cached, 0);
        g_hash_table_insert(weights_cache, g_memdup2(&key, sizeof key), cached);
    }
    g_mutex_unlock(&cache_lock);
    return cached;
}

/* ---- the operations ----------------------------------------------------------------------- */

/* Bytes of the weights in the layouts of a pass's primitives (the epilogue's post-ops do
 * not change it: checked where it is used). */
static size_t weights_bytes(const cs_conv_shape *s, int pass) {
    return dnnl_memory_desc_get_size(&plan_get(s, pass, 0)->weights_md);
}

size_t csk_dnnl_conv_forward_workspace(const cs_conv_shape *s) {
    return floats_of(nhwc_in_bytes(s)) + floats_of(nhwc_out_bytes(s, 0)) +
           floats_of(weights_bytes(s, PASS_FORWARD));
}

static size_t backward_weights_floats(const cs_conv_shape *s) {
    const size_t a = weights_bytes(s, PASS_BACKWARD_WEIGHTS), b = weights_bytes(s, PASS_BACKWARD_DATA);
    return floats_of(a > b ? a : b);
}

size_t csk_dnnl_conv_backward_workspace(const cs_conv_shape *s) {
    const size_t x = floats_of(nhwc_in_bytes(s)), dy = floats_of(nhwc_out_bytes(s, s->bf16));
    const size_t dx = floats_of((size_t)s->n * s->c * s->h * s->w * 4);
    return x + dy + dx + backward_weights_floats(s);
}

void csk_dnnl_conv_forward(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace) {
    const int epilogue = (scale ? EPI_SCALE : 0) | (shift ? EPI_SHIFT : 0) | (relu ? EPI_RELU : 0);
    const plan *p = plan_get(s, PASS_FORWARD, epilogue);
    float *xs = workspace, *ys = xs + floats_of(nhwc_in_bytes(s));
    float *wscratch = ys + floats_of(nhwc_out_bytes(s, 0));
    if (dnnl_memory_desc_get_size(&p->weights_md) > weights_bytes(s, PASS_FORWARD))
        g_error("internal error: oneDNN chose a larger weights layout with post-ops");
    const dnnl_memory_desc_t xmd = src_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t ymd = dst_md(s, dnnl_f32, dnnl_nhwc);
    if (!s->x_nhwc) {
        const dnnl_memory_desc_t x_nchw = src_md(s, dnnl_f32, dnnl_nchw);
        reorder_run(p->in[0], &x_nchw, x, &xmd, xs);
    } else if (s->bf16) {
        const dnnl_memory_desc_t x_nhwc = src_md(s, dnnl_f32, dnnl_nhwc);
        reorder_run(p->in_nhwc, &x_nhwc, x, &xmd, xs);
    } else {
        xs = (float *)x; /* already what the primitive takes */
    }
    if (s->y_nhwc) ys = y;
    const void *wr = weights_for(p, s, w, wscratch);

    const dnnl_memory_desc_t per_channel = plain_md(1, s->o, 1, 1, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_t bmd;
    const dnnl_dims_t bdims = {s->o};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&bmd, 1, bdims, dnnl_f32, dnnl_a));
    dnnl_memory_t mem[5];
    int n = 0;
    dnnl_exec_arg_t args[5];
    args[n].arg = DNNL_ARG_SRC, args[n].memory = mem[n] = memory_at(&xmd, xs), n++;
    args[n].arg = DNNL_ARG_WEIGHTS, args[n].memory = mem[n] = memory_at(&p->weights_md, wr), n++;
    args[n].arg = DNNL_ARG_DST, args[n].memory = mem[n] = memory_at(&ymd, ys), n++;
    if (scale) {
        args[n].arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;
        args[n].memory = mem[n] = memory_at(&per_channel, scale), n++;
        if (shift) {
            args[n].arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1;
            args[n].memory = mem[n] = memory_at(&per_channel, shift), n++;
        }
    } else if (shift) {
        args[n].arg = DNNL_ARG_BIAS, args[n].memory = mem[n] = memory_at(&bmd, shift), n++;
    }
    run(p->conv, n, args);
    for (int i = 0; i < n; i++) dnnl_memory_destroy(mem[i]);

    if (s->y_nhwc) return;
    const dnnl_memory_desc_t y_nchw = dst_md(s, dnnl_f32, dnnl_nchw);
    reorder_run(p->out, &ymd, ys, &y_nchw, y);
}

void cs_cpu_nhwc_to_nchw(float *y, const float *x, int n, int c, int hw) {
    const cs_conv_shape s = {.n = n, .c = c, .h = hw, .w = 1};
    const plan *p = plan_get(&s, PASS_TO_NCHW, 0);
    const dnnl_memory_desc_t from = plain_md(n, c, hw, 1, dnnl_f32, dnnl_nhwc);
    const dnnl_memory_desc_t to = plain_md(n, c, hw, 1, dnnl_f32, dnnl_nchw);
    reorder_run(p->out, &from, x, &to, y);
}

/* dw += dW; leaves x and dy in NHWC in xs and dys for the backward-data pass. */
static void backward_weights(float *dw, const float *x, const float *dy, void *xs, void *dys,
                             const cs_conv_shape *s, void *scratch) {
    const plan *p = plan_get(s, PASS_BACKWARD_WEIGHTS, 0);
    const dnnl_memory_desc_t xmd = src_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t dymd = dst_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t x_nchw = src_md(s, dnnl_f32, dnnl_nchw);
    const dnnl_memory_desc_t dy_nchw = dst_md(s, dnnl_f32, dnnl_nchw);
    reorder_run(p->in[0], &x_nchw, x, &xmd, xs);
    reorder_run(p->in[1], &dy_nchw, dy, &dymd, dys);
    dnnl_memory_t a = memory_at(&xmd, xs), b = memory_at(&dymd, dys),
                  c = memory_at(&p->weights_md, scratch);
    const dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC, a}, {DNNL_ARG_DIFF_DST, b}, {DNNL_ARG_DIFF_WEIGHTS, c}};
    run(p->conv, 3, args);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
    dnnl_memory_destroy(c);
    weights_reorder_run(p, s, dw, scratch, 1); /* dw += the blocked gradient */
}

static void backward_data(float *dx, const void *dys, const float *w, const cs_conv_shape *s,
                          float *dxs, void *scratch) {
    const plan *p = plan_get(s, PASS_BACKWARD_DATA, 0);
    const void *wr = weights_for(p, s, w, scratch);
    const dnnl_memory_desc_t dymd = dst_md(s, input_type(s), dnnl_nhwc);
    const dnnl_memory_desc_t dxmd = src_md(s, dnnl_f32, dnnl_nhwc);
    dnnl_memory_t a = memory_at(&dymd, dys), b = memory_at(&p->weights_md, wr),
                  c = memory_at(&dxmd, dxs);
    const dnnl_exec_arg_t args[] = {
        {DNNL_ARG_DIFF_DST, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DIFF_SRC, c}};
    run(p->conv, 3, args);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
    dnnl_memory_destroy(c);
    const dnnl_memory_desc_t nchw = src_md(s, dnnl_f32, dnnl_nchw);
    reorder_run(p->out, &dxmd, dxs, &nchw, dx); /* dx += */
}

void csk_dnnl_conv_backward(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace) {
    float *xs = workspace;
    float *dys = xs + floats_of(nhwc_in_bytes(s));
    float *dxs = dys + floats_of(nhwc_out_bytes(s, s->bf16));
    float *scratch = dxs + floats_of((size_t)s->n * s->c * s->h * s->w * 4);
    backward_weights(dw, x, dy, xs, dys, s, scratch);
    if (dx) backward_data(dx, dys, w, s, dxs, scratch);
}
