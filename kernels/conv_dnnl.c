/* conv_dnnl.c — 2-D convolution on the CPU through oneDNN's primitives (Debian's libdnnl,
 * 2.x or 3.x through dnnl_compat.h): forward with the scale/shift + ReLU epilogue as
 * post-ops, backward-data and backward-weights, in float32 or with bfloat16 inputs (AMX /
 * AVX512-BF16) and float32 accumulation.
 *
 * condseg's activations are NCHW; oneDNN's fast kernels (brgconv) want NHWC. A call
 * reorders its inputs into NHWC scratch (in the convolution's input precision, so the
 * bfloat16 rounding is that reorder) and its output back, unless the caller keeps the maps
 * in NHWC (cs_conv_shape.x_nhwc / y_nhwc: inference between convolutions); one pass over
 * each costs less than the k*k-fold im2col matrix it replaces. A plan — the primitives,
 * their reorders and memory descriptors of one shape — is made once and kept (a network
 * has a few dozen shapes). Weights are reordered into the layout the primitive chose on
 * every call, or, in bfloat16, once per weights tag (inference: once per model). Plans
 * hold no per-call state, so convolutions may run concurrently.
 *
 * In bfloat16 the weight gradient is computed from float32 x and dy. oneDNN 2.6's bf16
 * backward-weights kernel (jit:avx512_core_amx_bf16) ran at half the speed of its float32
 * one on NCHW-fed shapes; on the NHWC maps training now keeps, it made a compact training
 * step's convolution backward 23% faster and the paper network's no faster (CONDSEG_PROFILE,
 * same load), for a weight gradient 2e-3 (rel-L2) off instead of 1e-5: not worth it.
 */
#include <stdlib.h>
#include <string.h>

#include "conv_dnnl.h"
#include "dnnl_compat.h"

enum {
    PASS_FORWARD, PASS_BACKWARD_DATA, PASS_BACKWARD_WEIGHTS, PASS_TO_NCHW, PASS_TO_NHWC,
    PASS_TO_NHWC_SUM, PASS_FORWARD_WINOGRAD, PASS_PROBE
};
enum { EPI_SCALE = 1, EPI_SHIFT = 2, EPI_RELU = 4 };

/* Everything that makes a plan: all ints, compared and hashed as bytes. */
typedef struct {
    int n, c, h, w, o, k, stride, pad, dil, bf16, pass, epilogue;
} plan_key;

/* The layouts a plan's calls use, made with the plan. "in" is the convolution's input
 * type (bfloat16 or float32); y stands for dy in the backward passes. */
typedef struct {
    csd_md x_nchw, x_in, x_f32;       /* x: NCHW float32, NHWC in, NHWC float32 */
    csd_md y_nchw, y_in, y_f32;       /* y / dy likewise */
    csd_md oihw, weights;             /* float32 OIHW, the primitive's (diff) weights layout */
    csd_md per_channel, bias;         /* 1 x O x 1 x 1 and O, float32 */
} plan_layouts;

typedef struct {
    plan_layouts md;
    dnnl_primitive_t conv;
    dnnl_primitive_t weights_reorder; /* OIHW <-> md.weights (backward-weights: a sum) */
    /* NCHW -> NHWC: forward x (in[0]); backward-weights x and dy. NHWC -> NCHW: forward y,
     * backward-data dx (a sum: gradients accumulate), the layout pass. Forward in bf16 on
     * an NHWC float32 x: in_nhwc. */
    dnnl_primitive_t in[2], out, in_nhwc;
    size_t scratchpad_bytes;          /* the convolution's scratch, in our workspace */
    /* Winograd (conv NULL: this oneDNN has no such kernel for the shape): its maps are
     * blocked by 16 channels; `out_nhwc` is the pass from y_blocked to NHWC. */
    csd_md x_blocked, y_blocked;
    dnnl_primitive_t out_nhwc;
    int fallback; /* PASS_PROBE: oneDNN has only its im2col + GEMM or reference kernel */
} plan;

static dnnl_engine_t engine;
static GMutex cache_lock;
static GHashTable *plans;            /* plan_key -> plan */
static GHashTable *weights_cache;    /* weights_key -> reordered weights */
static guint64 last_tag;
/* One stream per thread that runs convolutions (a stream is not for concurrent use). */
static void stream_destroy(gpointer stream) { dnnl_stream_destroy(stream); }
static GPrivate thread_stream = G_PRIVATE_INIT(stream_destroy);

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
        CSD_CHECK(dnnl_engine_create(&e, dnnl_cpu, 0));
        plans = g_hash_table_new_full(plan_key_hash, plan_key_equal, g_free, NULL);
        g_once_init_leave(&engine, e);
    }
}

const char *cs_cpu_bf16_unsupported(void) {
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const unsigned bf16 = (unsigned)dnnl_cpu_isa_avx512_core_bf16;
    if ((isa & bf16) == bf16) return NULL;
    return "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)";
}

/* oneDNN's AVX512-BF16 kernels ran no faster than its float32 ones on an Intel Xeon whose
 * AMX was not enabled (paper network: 1186 ms against 1198 in one bench/run.sh; a bf16
 * matmul at 158 GFLOP/s against sgemm's 227): there the gain is AMX's. AMD's cores run
 * them at twice the float32 rate (Zen 5, 2 cores: paper network 272 ms against 463, a bf16
 * matmul at 724-783 GFLOP/s against sgemm's 412), so no note there. */
const char *cs_cpu_bf16_slow(void) {
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const unsigned amx = (unsigned)dnnl_cpu_isa_avx512_core_amx;
    if (cs_cpu_bf16_unsupported() || (isa & amx) == amx) return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!__builtin_cpu_is("intel")) return NULL;
#endif
    return "this Intel CPU has AVX512-BF16 but no AMX: bf16 is no faster than fp32 here";
}

/* ---- layouts -------------------------------------------------------------------------------- */

static dnnl_data_type_t input_type(const cs_conv_shape *s) { return s->bf16 ? dnnl_bf16 : dnnl_f32; }

static csd_md md4(int a, int b, int c, int d, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    const dnnl_dims_t dims = {a, b, c, d};
    return csd_md_new(4, dims, dt, tag);
}

static void layouts_make(plan_layouts *m, const cs_conv_shape *s) {
    const dnnl_data_type_t in = input_type(s);
    m->x_nchw = md4(s->n, s->c, s->h, s->w, dnnl_f32, dnnl_nchw);
    m->x_in = md4(s->n, s->c, s->h, s->w, in, dnnl_nhwc);
    m->x_f32 = md4(s->n, s->c, s->h, s->w, dnnl_f32, dnnl_nhwc);
    m->y_nchw = md4(s->n, s->o, s->ho, s->wo, dnnl_f32, dnnl_nchw);
    m->y_in = md4(s->n, s->o, s->ho, s->wo, in, dnnl_nhwc);
    m->y_f32 = md4(s->n, s->o, s->ho, s->wo, dnnl_f32, dnnl_nhwc);
    m->oihw = md4(s->o, s->c, s->k, s->k, dnnl_f32, dnnl_oihw);
    m->per_channel = md4(1, s->o, 1, 1, dnnl_f32, dnnl_nchw);
    const dnnl_dims_t o = {s->o};
    m->bias = csd_md_new(1, o, dnnl_f32, dnnl_a);
}

static csd_md weights_any(const cs_conv_shape *s, dnnl_data_type_t dt) {
    return md4(s->o, s->c, s->k, s->k, dt, dnnl_format_tag_any);
}

static size_t floats_of(size_t bytes) { return (bytes + 63) / 64 * 16; }
static size_t nhwc_in_bytes(const cs_conv_shape *s) {
    return (size_t)s->n * s->c * s->h * s->w * (s->bf16 ? 2 : 4);
}
static size_t nhwc_out_bytes(const cs_conv_shape *s, int bf16) {
    return (size_t)s->n * s->o * s->ho * s->wo * (bf16 ? 2 : 4);
}

/* ---- primitives -------------------------------------------------------------------------- */

static dnnl_primitive_t primitive_of(dnnl_primitive_desc_t pd) {
    dnnl_primitive_t p;
    CSD_CHECK(dnnl_primitive_create(&p, pd));
    return p;
}

static dnnl_primitive_t reorder_between(csd_md from, csd_md to, int accumulate) {
    dnnl_primitive_attr_t attr = NULL;
    if (accumulate) {
        dnnl_post_ops_t po;
        CSD_CHECK(dnnl_post_ops_create(&po));
        csd_append_sum(po);
        CSD_CHECK(dnnl_primitive_attr_create(&attr));
        CSD_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    CSD_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr));
    dnnl_primitive_t p = primitive_of(pd);
    dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return p;
}

/* oneDNN's right padding: what makes its output size PyTorch's floor formula exactly. */
static csd_conv_geometry geometry(const cs_conv_shape *s) {
    const int extent = (s->k - 1) * s->dil + 1;
    const int right_h = (s->ho - 1) * s->stride + extent - s->h - s->pad;
    const int right_w = (s->wo - 1) * s->stride + extent - s->w - s->pad;
    csd_conv_geometry g;
    g.strides[0] = g.strides[1] = s->stride;
    g.dilates[0] = g.dilates[1] = s->dil - 1;
    g.pad_l[0] = g.pad_l[1] = s->pad;
    g.pad_r[0] = right_h >= 0 ? right_h : s->pad;
    g.pad_r[1] = right_w >= 0 ? right_w : s->pad;
    return g;
}

/* Scratch from the caller's workspace: bounded, and shared by all primitives. */
static dnnl_primitive_attr_t conv_attr(void) {
    dnnl_primitive_attr_t attr;
    CSD_CHECK(dnnl_primitive_attr_create(&attr));
    CSD_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    return attr;
}

/* Per-channel scale (binary mul) and shift (binary add) after the GEMM, then ReLU; a shift
 * alone is the convolution's bias. */
static dnnl_primitive_attr_t epilogue_attr(const plan_layouts *m, int epilogue) {
    dnnl_post_ops_t po;
    CSD_CHECK(dnnl_post_ops_create(&po));
    if (epilogue & EPI_SCALE) {
        CSD_CHECK(dnnl_post_ops_append_binary(po, dnnl_binary_mul, m->per_channel));
        if (epilogue & EPI_SHIFT)
            CSD_CHECK(dnnl_post_ops_append_binary(po, dnnl_binary_add, m->per_channel));
    }
    if (epilogue & EPI_RELU) csd_append_relu(po);
    dnnl_primitive_attr_t attr = conv_attr();
    CSD_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_post_ops_destroy(po);
    return attr;
}

/* The primitive of pd, its weights layout and scratch size, and the weights reorder. */
static void plan_take(plan *p, dnnl_primitive_desc_t pd, dnnl_query_t weights_query, int pass) {
    p->conv = primitive_of(pd);
    p->md.weights = csd_md_clone(dnnl_primitive_desc_query_md(pd, weights_query, 0));
    p->scratchpad_bytes =
        dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    p->weights_reorder = pass == PASS_BACKWARD_WEIGHTS
                             ? reorder_between(p->md.weights, p->md.oihw, 1)
                             : reorder_between(p->md.oihw, p->md.weights, 0);
    dnnl_primitive_desc_destroy(pd);
}

static void forward_pd(dnnl_primitive_desc_t *pd, const plan_layouts *m, const cs_conv_shape *s,
                       dnnl_prop_kind_t prop, int with_bias, const_dnnl_primitive_attr_t attr) {
    const csd_conv_geometry g = geometry(s);
    csd_md w = weights_any(s, input_type(s));
    csd_forward_pd(pd, engine, prop, m->x_in, w, with_bias ? m->bias : NULL, m->y_f32, &g, attr);
    csd_md_free(w);
}

static plan *plan_forward(const cs_conv_shape *s, int epilogue) {
    plan *p = g_new0(plan, 1);
    layouts_make(&p->md, s);
    dnnl_primitive_attr_t attr = epilogue_attr(&p->md, epilogue);
    dnnl_primitive_desc_t pd;
    forward_pd(&pd, &p->md, s, dnnl_forward_inference,
               (epilogue & EPI_SHIFT) && !(epilogue & EPI_SCALE), attr);
    dnnl_primitive_attr_destroy(attr);
    plan_take(p, pd, dnnl_query_weights_md, PASS_FORWARD);
    p->in[0] = reorder_between(p->md.x_nchw, p->md.x_in, 0);
    p->out = reorder_between(p->md.y_f32, p->md.y_nchw, 0);
    if (s->bf16) p->in_nhwc = reorder_between(p->md.x_f32, p->md.x_in, 0);
    return p;
}

static plan *plan_backward(const cs_conv_shape *s, int pass) {
    plan *p = g_new0(plan, 1);
    layouts_make(&p->md, s);
    dnnl_primitive_desc_t hint, pd;
    forward_pd(&hint, &p->md, s, dnnl_forward_training, 0, NULL);
    const csd_conv_geometry g = geometry(s);
    dnnl_primitive_attr_t attr = conv_attr();
    if (pass == PASS_BACKWARD_DATA) {
        csd_md w = weights_any(s, input_type(s));
        csd_backward_data_pd(&pd, engine, p->md.x_f32, w, p->md.y_in, &g, hint, attr);
        csd_md_free(w);
        plan_take(p, pd, dnnl_query_weights_md, pass);
        p->out = reorder_between(p->md.x_f32, p->md.x_nchw, 1);
        if (s->bf16) p->in[1] = reorder_between(p->md.y_f32, p->md.y_in, 0);
    } else {
        csd_md dw = weights_any(s, dnnl_f32);
        csd_backward_weights_pd(&pd, engine, p->md.x_in, dw, p->md.y_in, &g, hint, attr);
        csd_md_free(dw);
        plan_take(p, pd, dnnl_query_diff_weights_md, pass);
        p->in[0] = reorder_between(p->md.x_nchw, p->md.x_in, 0);
        p->in[1] = reorder_between(p->md.y_nchw, p->md.y_in, 0);
    }
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(hint);
    return p;
}

/* The layout pass back to NCHW of an n x c x hw map (x_* and `out` only), or, for its
 * gradient, from NCHW to (or onto, +=) an NHWC map. */
static plan *plan_layout_pass(const cs_conv_shape *s, int pass) {
    plan *p = g_new0(plan, 1);
    p->md.x_f32 = md4(s->n, s->c, s->h, 1, dnnl_f32, dnnl_nhwc);
    p->md.x_nchw = md4(s->n, s->c, s->h, 1, dnnl_f32, dnnl_nchw);
    p->out = pass == PASS_TO_NCHW ? reorder_between(p->md.x_f32, p->md.x_nchw, 0)
                                  : reorder_between(p->md.x_nchw, p->md.x_f32,
                                                    pass == PASS_TO_NHWC_SUM);
    return p;
}

/* ---- Winograd (float32 inference) ------------------------------------------------------
 * oneDNN 2.x's Winograd kernel F(2x2, 3x3) (jit_fp32_wino_2x3 on AVX-512) computes a 3x3
 * stride-1 convolution with 2.25x fewer multiplications, on maps blocked by 16 channels.
 * Measured on the networks' shapes, one image (Xeon, 2 threads, against brgconv on NHWC):
 * 128 -> 128 channels at 128x128, 12.5 against 17-20 ms; at 256x256, 48 against 73-75; at
 * 64x64, 3.1 against 4.5. Its weights' transform is per call (1.3-1.9 ms, 1.8x the weights)
 * and each map needs passes to and from the blocked layout, so it is used from 128x128
 * output pixels up (64x64 came out even). Its F(4x4, 3x3) kernel (jit_wino_4x3, chosen for
 * 256-512 input channels) is refused: 4x the weights in the workspace and a 12-19 ms
 * transform per call, which took most of its gain and pushed the paper network's peak RSS
 * 30 MB above the limit. A whole map's transformed tiles took up to 140 MB of
 * scratch, so the map goes through in bands of output rows, each band's input rows (with
 * their halo) reordered into a small blocked buffer that stays in cache; the first and last
 * bands get their zero row in a staging copy, so that no band is padded vertically (with
 * padded edges oneDNN chose the 4x3 kernel there). The sums differ from the direct ones by
 * 1-2e-6 of the output's scale (test_layout); the whole network's outputs stayed as close to
 * the float64 reference (test_network: mask 1.79e-5 against 1.83e-5 direct). Training,
 * whose backward is the direct convolution's, keeps the direct sums. CONDSEG_WINOGRAD=0
 * turns it off (benchmarks' A/B). */
#define CS_WINOGRAD_MIN_PIXELS (128 * 128)
/* A band's input rows: 2 MB (32 rows of 128 channels at 128 wide), which kept the
 * workspace within the direct engine's (the transformed tiles are 4-9x the band). */
#define CS_WINOGRAD_BAND_FLOATS ((size_t)1 << 19)

static int winograd_wanted(const cs_conv_shape *s) {
    static int disabled = -1;
    if (disabled < 0) {
        const char *e = getenv("CONDSEG_WINOGRAD");
        disabled = e && strcmp(e, "0") == 0;
    }
    return !disabled && s->winograd && !s->bf16 && s->x_nhwc && s->y_nhwc && s->k == 3 &&
           s->stride == 1 && s->dil == 1 && s->pad == 1 &&
           (size_t)s->n * s->ho * s->wo >= CS_WINOGRAD_MIN_PIXELS;
}

/* The epilogue of a Winograd plan: the scale goes into the weights (winograd_forward), the
 * shift is the bias, ReLU a post-op. */
static dnnl_primitive_attr_t winograd_attr(int epilogue) {
    dnnl_primitive_attr_t attr = conv_attr();
    if (epilogue & EPI_RELU) {
        dnnl_post_ops_t po;
        CSD_CHECK(dnnl_post_ops_create(&po));
        csd_append_relu(po);
        CSD_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    return attr;
}

/* The plan of one band (s: one image, the band's input rows, the halo rows included, so
 * that no band is padded at the top or bottom); conv NULL where this oneDNN has no
 * Winograd kernel for it. */
static plan *plan_winograd(const cs_conv_shape *s, int epilogue) {
    plan *p = g_new0(plan, 1);
    layouts_make(&p->md, s);
    p->x_blocked = md4(s->n, s->c, s->h, s->w, dnnl_f32, dnnl_nChw16c);
    p->y_blocked = md4(s->n, s->o, s->ho, s->wo, dnnl_f32, dnnl_nChw16c);
    dnnl_primitive_attr_t attr = winograd_attr(epilogue);
    csd_md w = weights_any(s, dnnl_f32);
    csd_conv_geometry g = geometry(s);
    g.pad_l[0] = g.pad_r[0] = 0;
    dnnl_primitive_desc_t pd;
    const dnnl_status_t st =
        csd_winograd_forward_pd(&pd, engine, p->x_blocked, w,
                                (epilogue & EPI_SHIFT) ? p->md.bias : NULL, p->y_blocked, &g, attr);
    csd_md_free(w);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return p;
    const char *impl = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (!strstr(impl, "2x3")) { /* the 4x3 kernel: see the top of this section */
        dnnl_primitive_desc_destroy(pd);
        return p;
    }
    plan_take(p, pd, dnnl_query_weights_md, PASS_FORWARD);
    p->in_nhwc = reorder_between(p->md.x_f32, p->x_blocked, 0);
    p->out_nhwc = reorder_between(p->y_blocked, p->md.y_f32, 0);
    return p;
}

/* ---- oneDNN's fallback kernels --------------------------------------------------------
 * Where oneDNN has no direct kernel for a shape it runs its own im2col + GEMM ("gemm:jit")
 * or a reference loop. On an AVX2 CPU (AMD EPYC, Debian's oneDNN 2.6) that is every dilated
 * convolution of the networks (their padding is wider than the jit kernel's row block):
 * 3.9 GFLOP/s against 38 for im2col + OpenBLAS sgemm (compact preset, CONDSEG_PROFILE=1),
 * so conv_cpu.c runs such shapes on sgemm. The probe makes the forward's descriptor only. */
static plan *plan_probe(const cs_conv_shape *s) {
    plan *p = g_new0(plan, 1);
    layouts_make(&p->md, s);
    dnnl_primitive_attr_t attr = conv_attr();
    dnnl_primitive_desc_t pd;
    forward_pd(&pd, &p->md, s, dnnl_forward_inference, 0, attr);
    dnnl_primitive_attr_destroy(attr);
    const char *impl = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    p->fallback = strstr(impl, "gemm") != NULL || strstr(impl, "ref") != NULL;
    dnnl_primitive_desc_destroy(pd);
    return p;
}

static const plan *plan_get(const cs_conv_shape *s, int pass, int epilogue) {
    engine_init();
    plan_key key = {s->n, s->c, s->h, s->w, s->o, s->k, s->stride, s->pad, s->dil, !!s->bf16,
                    pass, epilogue};
    g_mutex_lock(&cache_lock);
    plan *p = g_hash_table_lookup(plans, &key);
    if (!p) {
        p = pass == PASS_FORWARD            ? plan_forward(s, epilogue)
            : pass == PASS_FORWARD_WINOGRAD ? plan_winograd(s, epilogue)
            : pass == PASS_PROBE            ? plan_probe(s)
            : pass >= PASS_TO_NCHW          ? plan_layout_pass(s, pass)
                                            : plan_backward(s, pass);
        g_hash_table_insert(plans, g_memdup2(&key, sizeof key), p);
    }
    g_mutex_unlock(&cache_lock);
    return p;
}

/* ---- execution ----------------------------------------------------------------------------- */

static dnnl_memory_t memory_at(csd_md md, const void *data) {
    dnnl_memory_t m;
    CSD_CHECK(dnnl_memory_create(&m, md, engine, (void *)data));
    return m;
}

static void run(dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args) {
    dnnl_stream_t stream = g_private_get(&thread_stream);
    if (!stream) {
        CSD_CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
        g_private_set(&thread_stream, stream);
    }
    CSD_CHECK(dnnl_primitive_execute(prim, stream, nargs, args));
    CSD_CHECK(dnnl_stream_wait(stream));
}

/* Runs reorder `r` from `from` (layout from_md) to `to` (to_md). */
static void reorder_run(dnnl_primitive_t r, csd_md from_md, const void *from, csd_md to_md,
                        void *to) {
    dnnl_memory_t a = memory_at(from_md, from), b = memory_at(to_md, to);
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
    run(r, 2, args);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
}

/* Runs convolution plan p on `nargs` arguments (args has room for one more) with its
 * scratchpad at `scratch` (`avail` bytes; a post-op variant that wants more gets its own). */
static void run_conv(const plan *p, int nargs, dnnl_exec_arg_t *args, void *scratch,
                     size_t avail) {
    void *own = p->scratchpad_bytes > avail ? g_malloc(p->scratchpad_bytes) : NULL;
    const dnnl_dims_t dims = {(dnnl_dim_t)(p->scratchpad_bytes ? p->scratchpad_bytes : 1)};
    csd_md md = csd_md_new(1, dims, dnnl_u8, dnnl_a);
    dnnl_memory_t m = memory_at(md, own ? own : scratch);
    args[nargs].arg = DNNL_ARG_SCRATCHPAD, args[nargs].memory = m;
    run(p->conv, nargs + 1, args);
    dnnl_memory_destroy(m);
    csd_md_free(md);
    g_free(own);
}

static void weights_reorder_run(const plan *p, const float *oihw, void *blocked, int to_oihw) {
    if (to_oihw) reorder_run(p->weights_reorder, p->md.weights, blocked, p->md.oihw, (void *)oihw);
    else reorder_run(p->weights_reorder, p->md.oihw, oihw, p->md.weights, blocked);
}

/* ---- the weights cache (tagged weights: reordered once) ---------------------------------- */

typedef struct {
    const float *w;
    guint64 scale_hash; /* of the scale folded into Winograd's weights (0: none) */
    const plan *p;
    guint64 tag;
} weights_key;

/* FNV-1a over the scale's values: inference makes the folded BatchNorm's scale anew for
 * every forward (a new buffer, the same values while the tag lives). */
static guint64 values_hash(const float *v, int n) {
    if (!v) return 0;
    const unsigned char *b = (const unsigned char *)v;
    guint64 h = 1469598103934665603ull;
    for (size_t i = 0; i < (size_t)n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    return h | 1;
}

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

/* dst = w with each output channel's row times its scale (Winograd's kernel has no
 * per-channel output scale, so the folded BatchNorm goes into its weights). */
static void weights_times_scale(float *dst, const float *w, const float *scale,
                                const cs_conv_shape *s) {
    cs_cpu_mul_channel(dst, w, scale, 1, s->o, s->c * s->k * s->k);
}

/* The weights w (times the scale, when given) in the plan's layout, made once for the tag. */
static const void *cached_weights(const plan *p, const cs_conv_shape *s, const float *w,
                                  const float *scale) {
    weights_key key;
    memset(&key, 0, sizeof key);
    key.w = w, key.scale_hash = values_hash(scale, s->o), key.p = p, key.tag = s->weights_tag;
    g_mutex_lock(&cache_lock);
    if (!weights_cache)
        weights_cache = g_hash_table_new_full(weights_key_hash, weights_key_equal, g_free, g_free);
    void *cached = g_hash_table_lookup(weights_cache, &key);
    if (!cached) {
        float *scaled = scale ? g_new(float, (size_t)s->o * s->c * s->k * s->k) : NULL;
        if (scale) weights_times_scale(scaled, w, scale, s);
        cached = g_malloc(dnnl_memory_desc_get_size(p->md.weights));
        weights_reorder_run(p, scale ? scaled : w, cached, 0);
        g_free(scaled);
        g_hash_table_insert(weights_cache, g_memdup2(&key, sizeof key), cached);
    }
    g_mutex_unlock(&cache_lock);
    return cached;
}

/* The weights in the plan's layout: from the cache when tagged and in bfloat16, else
 * reordered into `scratch`. A float32 cache would double the model's memory (182 MB more
 * for the paper's network) to save one pass over the weights per forward (a few percent of
 * its time); the bfloat16 copy is half that size and the pass a larger share. */
static const void *weights_for(const plan *p, const cs_conv_shape *s, const float *w,
                               void *scratch) {
    if (!s->weights_tag || !s->bf16) {
        weights_reorder_run(p, w, scratch, 0);
        return scratch;
    }
    return cached_weights(p, s, w, NULL);
}

/* ---- the operations ----------------------------------------------------------------------- */

/* Bytes of the weights and of the scratchpad of a pass's primitive (without post-ops). */
static size_t weights_bytes(const cs_conv_shape *s, int pass) {
    return dnnl_memory_desc_get_size(plan_get(s, pass, 0)->md.weights);
}
static size_t scratchpad_bytes(const cs_conv_shape *s, int pass) {
    return plan_get(s, pass, 0)->scratchpad_bytes;
}
static size_t max_bytes(size_t a, size_t b) { return a > b ? a : b; }

/* Workspace, forward: x in NHWC (unless x is already in the primitive's layout) | y in
 * NHWC (unless the caller takes NHWC) | weights | oneDNN's scratchpad. */
static size_t forward_x_floats(const cs_conv_shape *s) {
    const int ready = s->bf16 ? s->x_bf16 != NULL : s->x_nhwc;
    return ready ? 0 : floats_of(nhwc_in_bytes(s));
}
static size_t forward_y_floats(const cs_conv_shape *s) {
    return s->y_nhwc ? 0 : floats_of(nhwc_out_bytes(s, 0));
}

static size_t direct_forward_floats(const cs_conv_shape *s) {
    return forward_x_floats(s) + forward_y_floats(s) + floats_of(weights_bytes(s, PASS_FORWARD)) +
           floats_of(scratchpad_bytes(s, PASS_FORWARD));
}

/* Output rows [r0, r0 + rows) of one image: input rows r0 - 1 to r0 + rows, the ones
 * outside the map zero. */
static int winograd_band_rows(const cs_conv_shape *s) {
    int rows = (int)(CS_WINOGRAD_BAND_FLOATS / ((size_t)s->w * s->c)) / 4 * 4;
    return rows < 4 ? 4 : rows > s->ho ? s->ho : rows;
}

static cs_conv_shape band_shape(const cs_conv_shape *s, int rows) {
    cs_conv_shape b = *s;
    b.n = 1;
    b.h = rows + 2;
    b.ho = rows;
    return b;
}

static const plan *band_plan(const cs_conv_shape *s, int rows, int epilogue) {
    const cs_conv_shape b = band_shape(s, rows);
    return plan_get(&b, PASS_FORWARD_WINOGRAD, epilogue);
}

/* A band's NHWC input rows: the edge bands' staging copy. */
static size_t band_staging_floats(const cs_conv_shape *s, int rows) {
    return floats_of((size_t)(rows + 2) * s->w * s->c * 4);
}

/* Tagged weights whose transformed copy is this small are transformed once and kept (the
 * weights cache) instead of on every call: all of the compact preset's (32-64 channels),
 * whose transforms took 2.4-2.9 of 13.4 ms of Winograd per forward (AMD Zen 5, 256x256);
 * not the paper network's 128-channel ones (1 MB each, 18 MB in all, which
 * would take its peak memory over this engine's limit). */
#define CS_WINOGRAD_KEEP_BYTES ((size_t)256 << 10)

static int winograd_weights_kept(const cs_conv_shape *s, const plan *p) {
    return s->weights_tag && dnnl_memory_desc_get_size(p->md.weights) <= CS_WINOGRAD_KEEP_BYTES;
}

/* Whether every band of the shape has the Winograd kernel; with `floats`, the workspace its
 * bands need at most: the weights times the scale (OIHW) | the staging copy | the weights
 * in the kernel's layout | x and y of a band, blocked | the scratchpad (of the plans without
 * epilogue; one that wants more gets its own). Kept weights need neither copy there. */
static int winograd_ok(const cs_conv_shape *s, size_t *floats) {
    if (!winograd_wanted(s)) return 0;
    const int rows = winograd_band_rows(s), last = s->ho - (s->ho - 1) / rows * rows;
    const plan *first = band_plan(s, rows, 0);
    if (!first->conv) return 0;
    const int kept = winograd_weights_kept(s, first);
    size_t total = (kept ? 0 : floats_of((size_t)s->o * s->c * 9 * 4)) +
                   band_staging_floats(s, rows);
    size_t most = 0;
    for (int k = 0; k < 2; k++) {
        const plan *p = band_plan(s, k ? last : rows, 0);
        if (!p->conv) return 0;
        most = max_bytes(most, (kept ? 0 : floats_of(dnnl_memory_desc_get_size(p->md.weights))) +
                                   floats_of(dnnl_memory_desc_get_size(p->x_blocked)) +
                                   floats_of(dnnl_memory_desc_get_size(p->y_blocked)) +
                                   floats_of(p->scratchpad_bytes));
    }
    if (floats) *floats = total + most;
    return 1;
}

int csk_dnnl_conv_fallback(const cs_conv_shape *s) {
    return plan_get(s, PASS_PROBE, 0)->fallback;
}

size_t csk_dnnl_conv_forward_workspace(const cs_conv_shape *s) {
    size_t winograd = 0;
    return winograd_ok(s, &winograd) ? winograd : direct_forward_floats(s);
}

int csk_dnnl_conv_winograd(const cs_conv_shape *s) { return winograd_ok(s, NULL); }

/* The backward-weights pass runs in float32 whatever the precision (see the top). */
static cs_conv_shape as_float32(const cs_conv_shape *s) {
    cs_conv_shape f = *s;
    f.bf16 = 0;
    return f;
}

/* Backward: x | dy (float32, NHWC) | dy in bf16 (bf16 only) | dx (NHWC) | weights or their
 * gradient | either pass's scratchpad. */
static size_t dy_bf16_floats(const cs_conv_shape *s) {
    return s->bf16 ? floats_of(nhwc_out_bytes(s, 1)) : 0;
}
static size_t backward_weights_floats(const cs_conv_shape *s) {
    const cs_conv_shape f = as_float32(s);
    return floats_of(max_bytes(weights_bytes(&f, PASS_BACKWARD_WEIGHTS),
                               weights_bytes(s, PASS_BACKWARD_DATA)));
}
static size_t backward_scratchpad_floats(const cs_conv_shape *s) {
    const cs_conv_shape f = as_float32(s);
    return floats_of(max_bytes(scratchpad_bytes(&f, PASS_BACKWARD_WEIGHTS),
                               scratchpad_bytes(s, PASS_BACKWARD_DATA)));
}
static size_t nchw_in_floats(const cs_conv_shape *s) {
    return floats_of((size_t)s->n * s->c * s->h * s->w * 4);
}

size_t csk_dnnl_conv_backward_workspace(const cs_conv_shape *s) {
    return nchw_in_floats(s) + floats_of(nhwc_out_bytes(s, 0)) + dy_bf16_floats(s) +
           nchw_in_floats(s) + backward_weights_floats(s) + backward_scratchpad_floats(s);
}

/* x as the primitive takes it: reordered into xs (or the caller's bfloat16 copy), or x
 * itself when it already is. */
static const void *forward_input(const plan *p, const cs_conv_shape *s, const float *x, float *xs) {
    if (s->bf16 && s->x_bf16) {
        if (s->x_bf16_ready) return s->x_bf16;
        xs = s->x_bf16;
    }
    if (!s->x_nhwc) reorder_run(p->in[0], p->md.x_nchw, x, p->md.x_in, xs);
    else if (s->bf16) reorder_run(p->in_nhwc, p->md.x_f32, x, p->md.x_in, xs);
    else return x;
    return xs;
}

/* One band: its input rows (halo included) into the blocked buffer, the convolution, its
 * output rows out. */
static void band_run(const plan *p, float *y, const float *x, const void *weights,
                     const float *shift, float *buffers, size_t avail) {
    float *xb = buffers, *yb = xb + floats_of(dnnl_memory_desc_get_size(p->x_blocked));
    float *pad = yb + floats_of(dnnl_memory_desc_get_size(p->y_blocked));
    const size_t used = 4 * (size_t)(pad - buffers);
    reorder_run(p->in_nhwc, p->md.x_f32, x, p->x_blocked, xb);
    dnnl_memory_t mem[4];
    dnnl_exec_arg_t args[5];
    const csd_md mds[4] = {p->x_blocked, p->md.weights, p->y_blocked, p->md.bias};
    const void *data[4] = {xb, weights, yb, shift};
    const int which[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
    const int n = shift ? 4 : 3;
    for (int i = 0; i < n; i++) {
        mem[i] = memory_at(mds[i], data[i]);
        args[i].arg = which[i], args[i].memory = mem[i];
    }
    run_conv(p, n, args, pad, avail > used ? avail - used : 0);
    for (int i = 0; i < n; i++) dnnl_memory_destroy(mem[i]);
    reorder_run(p->out_nhwc, p->y_blocked, yb, p->md.y_f32, y);
}

/* The input rows r0 - 1 .. r0 + rows of image `img` (NHWC): x itself, or, at the map's
 * edges, a staging copy with the zero rows outside it. */
static const float *band_input(const float *img, const cs_conv_shape *s, int r0, int rows,
                               float *staging) {
    const size_t row = (size_t)s->w * s->c;
    if (r0 > 0 && r0 + rows < s->ho) return img + (size_t)(r0 - 1) * row;
    const int first = r0 > 0 ? r0 - 1 : 0, last = r0 + rows < s->h ? r0 + rows : s->h - 1;
    float *dst = staging;
    if (r0 == 0) memset(dst, 0, row * sizeof(float)), dst += row;
    memcpy(dst, img + (size_t)first * row, (size_t)(last - first + 1) * row * sizeof(float));
    if (r0 + rows >= s->ho) memset(dst + (size_t)(last - first + 1) * row, 0, row * sizeof(float));
    return staging;
}

/* `total`: the workspace's floats (winograd_ok). The weights times the scale in the
 * kernel's layout are made on every call, or once where they are kept. */
static void winograd_forward(float *y, const float *x, const float *w, const float *scale,
                             const float *shift, const cs_conv_shape *s, int epilogue,
                             float *workspace, size_t total) {
    const int rows = winograd_band_rows(s);
    const int kept = winograd_weights_kept(s, band_plan(s, rows, 0));
    float *scaled = workspace;
    float *staging = scaled + (kept ? 0 : floats_of((size_t)s->o * s->c * 9 * 4));
    float *weights = staging + band_staging_floats(s, rows);
    const plan *transformed = NULL; /* whose weights layout `layout_weights` holds */
    const void *layout_weights = NULL;
    if (scale && !kept) weights_times_scale(scaled, w, scale, s);
    for (int r0 = 0; r0 < s->ho; r0 += rows) {
        const int n_rows = r0 + rows < s->ho ? rows : s->ho - r0;
        const plan *p = band_plan(s, n_rows, epilogue);
        float *buffers =
            kept ? weights : weights + floats_of(dnnl_memory_desc_get_size(p->md.weights));
        if (!transformed || !dnnl_memory_desc_equal(transformed->md.weights, p->md.weights)) {
            if (kept) {
                layout_weights = cached_weights(p, s, w, scale);
            } else {
                weights_reorder_run(p, scale ? scaled : w, weights, 0);
                layout_weights = weights;
            }
            transformed = p;
        }
        for (int i = 0; i < s->n; i++) {
            const float *img = x + (size_t)i * s->h * s->w * s->c;
            float *out = y + ((size_t)i * s->ho + r0) * s->wo * s->o;
            band_run(p, out, band_input(img, s, r0, n_rows, staging), layout_weights, shift,
                     buffers, 4 * (total - (size_t)(buffers - workspace)));
        }
    }
}

void csk_dnnl_conv_forward(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace) {
    const int epilogue = (scale ? EPI_SCALE : 0) | (shift ? EPI_SHIFT : 0) | (relu ? EPI_RELU : 0);
    size_t winograd_floats;
    if (winograd_ok(s, &winograd_floats)) {
        winograd_forward(y, x, w, scale, shift, s, epilogue, workspace, winograd_floats);
        return;
    }
    const plan *p = plan_get(s, PASS_FORWARD, epilogue);
    float *xs = workspace, *ys = xs + forward_x_floats(s);
    float *wscratch = ys + forward_y_floats(s);
    float *pad = wscratch + floats_of(weights_bytes(s, PASS_FORWARD));
    if (dnnl_memory_desc_get_size(p->md.weights) > weights_bytes(s, PASS_FORWARD))
        g_error("internal error: oneDNN chose a larger weights layout with post-ops");
    const void *xin = forward_input(p, s, x, xs);
    if (s->y_nhwc) ys = y;
    const void *wr = weights_for(p, s, w, wscratch);

    dnnl_memory_t mem[5];
    dnnl_exec_arg_t args[6];
    int n = 0;
#define ARG(which, md, data) \
    (args[n].arg = (which), args[n].memory = mem[n] = memory_at((md), (data)), n++)
    ARG(DNNL_ARG_SRC, p->md.x_in, xin);
    ARG(DNNL_ARG_WEIGHTS, p->md.weights, wr);
    ARG(DNNL_ARG_DST, p->md.y_f32, ys);
    if (scale) {
        ARG(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, p->md.per_channel, scale);
        if (shift) ARG(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, p->md.per_channel, shift);
    } else if (shift) {
        ARG(DNNL_ARG_BIAS, p->md.bias, shift);
    }
#undef ARG
    run_conv(p, n, args, pad, 4 * floats_of(scratchpad_bytes(s, PASS_FORWARD)));
    for (int i = 0; i < n; i++) dnnl_memory_destroy(mem[i]);
    if (!s->y_nhwc) reorder_run(p->out, p->md.y_f32, ys, p->md.y_nchw, y);
}

void cs_cpu_nhwc_to_nchw(float *y, const float *x, int n, int c, int hw) {
    const cs_conv_shape s = {.n = n, .c = c, .h = hw, .w = 1};
    const plan *p = plan_get(&s, PASS_TO_NCHW, 0);
    reorder_run(p->out, p->md.x_f32, x, p->md.x_nchw, y);
}

void cs_cpu_nchw_to_nhwc(float *y, const float *x, int n, int c, int hw, int accumulate) {
    const cs_conv_shape s = {.n = n, .c = c, .h = hw, .w = 1};
    const plan *p = plan_get(&s, accumulate ? PASS_TO_NHWC_SUM : PASS_TO_NHWC, 0);
    reorder_run(p->out, p->md.x_nchw, x, p->md.x_f32, y);
}

/* Runs a backward plan on (src or diff_src, weights or diff_weights, diff_dst). */
static void run_backward(const plan *p, int first_arg, csd_md first_md, const void *first,
                         int weights_arg, const void *weights, const void *dys, void *pad,
                         size_t avail) {
    dnnl_memory_t a = memory_at(first_md, first), b = memory_at(p->md.weights, weights),
                  c = memory_at(p->md.y_in, dys);
    dnnl_exec_arg_t args[] = {
        {first_arg, a}, {weights_arg, b}, {DNNL_ARG_DIFF_DST, c}, {0, NULL}};
    run_conv(p, 3, args, pad, avail);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
    dnnl_memory_destroy(c);
}

void csk_dnnl_conv_backward(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace) {
    float *xs = workspace;
    float *dys = xs + nchw_in_floats(s);
    float *dys_bf16 = dys + floats_of(nhwc_out_bytes(s, 0));
    float *dxs = dys_bf16 + dy_bf16_floats(s);
    float *scratch = dxs + nchw_in_floats(s);
    float *pad = scratch + backward_weights_floats(s);
    const size_t avail = 4 * backward_scratchpad_floats(s);

    /* dw += dW (the blocked gradient reordered onto it), from x and dy in NHWC float32
     * (maps already in NHWC are used as they are). */
    const cs_conv_shape f = as_float32(s);
    const plan *pw = plan_get(&f, PASS_BACKWARD_WEIGHTS, 0);
    const float *x_nhwc = x, *dy_nhwc = dy;
    if (!s->x_nhwc) reorder_run(pw->in[0], pw->md.x_nchw, x, pw->md.x_in, xs), x_nhwc = xs;
    if (!s->y_nhwc) reorder_run(pw->in[1], pw->md.y_nchw, dy, pw->md.y_in, dys), dy_nhwc = dys;
    run_backward(pw, DNNL_ARG_SRC, pw->md.x_in, x_nhwc, DNNL_ARG_DIFF_WEIGHTS, scratch, dy_nhwc,
                 pad, avail);
    weights_reorder_run(pw, dw, scratch, 1);
    if (!dx) return;

    /* dx += dX, from the same dy (rounded to bfloat16 in bf16). */
    const plan *pd = plan_get(s, PASS_BACKWARD_DATA, 0);
    const void *dy_in = dy_nhwc;
    if (s->bf16) {
        reorder_run(pd->in[1], pd->md.y_f32, dy_nhwc, pd->md.y_in, dys_bf16);
        dy_in = dys_bf16;
    }
    const void *wr = weights_for(pd, s, w, scratch);
    run_backward(pd, DNNL_ARG_DIFF_SRC, pd->md.x_f32, dxs, DNNL_ARG_WEIGHTS, wr, dy_in, pad,
                 avail);
    if (s->x_nhwc) cs_cpu_accumulate(dx, dxs, (size_t)s->n * s->c * s->h * s->w);
    else reorder_run(pd->out, pd->md.x_f32, dxs, pd->md.x_nchw, dx);
}
