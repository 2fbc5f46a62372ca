/* test_grad.c — every operation's backward pass, two ways:
 *  1. against central finite differences of the same operation (on small random inputs,
 *     away from the kinks of ReLU and max; every input and parameter gradient, at sampled
 *     elements), and
 *  2. against the PyTorch reference's autograd gradients (tools/make_golden.py ops:
 *     the golden's dy, inputs computed in float64), max |ours - reference| <= 1e-5 x scale.
 * Both run through the tensor-level operations and the tape, as training does. */
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#include "golden.h"
#include "graph.h"
#include "kernels.h"
#include "net.h"
#include "params.h"

#define AUTOGRAD_TOL 1e-5
#define FD_EPS 5e-3
/* |fd - analytic| <= FD_TOL * max(1, max |analytic|): the FD truncation error stays under
 * it, a wrong formula lands far above. */
#define FD_TOL 5e-3
#define FD_SAMPLES 24

/* ---- part 1: finite differences -------------------------------------------------------- */

typedef struct {
    int n, c, h, w;
} shape4;

typedef struct {
    const char *name;      /* parameter name */
    int ndim;
    int64_t d[4];
    int counter;           /* a num_batches_tracked entry */
} param_decl;

typedef cs_tensor *(*op_builder)(cs_ctx *ctx, cs_tensor **in);

typedef struct {
    const char *name;
    op_builder build;
    int n_in;
    shape4 in[3];
    param_decl params[6];
    int distinct;          /* inputs spread out (max operations: no near-ties) */
    int away_from_zero;    /* 1: |inputs| >= 0.05 (a ReLU's kink); 2: inputs >= 0.05 */
    float bn_bias;         /* nonzero: every BatchNorm bias (keeps a following ReLU open) */
} fd_case;

static GRand *rng;

static float rand_normal(void) {
    double u = 1.0 - g_rand_double(rng), v = g_rand_double(rng);
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * G_PI * v));
}

static void fill_input(float *x, size_t n, const fd_case *c) {
    if (c->distinct) {
        /* A shuffled grid 0.02 apart: every maximum wins by more than 2 FD_EPS. */
        for (size_t i = 0; i < n; i++) x[i] = (float)((double)i * 0.02 - 0.01 * (double)n);
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)g_rand_int_range(rng, 0, (gint32)i);
            float t = x[i - 1];
            x[i - 1] = x[j], x[j] = t;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = rand_normal();
        if (c->away_from_zero == 2) v = fabsf(v) + 0.05f;
        else if (c->away_from_zero && fabsf(v) < 0.05f) v = v < 0 ? v - 0.05f : v + 0.05f;
        x[i] = v;
    }
}

/* L = sum dy * y in double, for the current inputs and parameters. */
static double eval_loss(cs_ctx *ctx, const fd_case *c, float **inputs, const float *dy,
                        size_t n_out) {
    cs_ctx_reset(ctx);
    cs_tensor *in[3];
    for (int i = 0; i < c->n_in; i++) {
        const shape4 *s = &c->in[i];
        in[i] = cs_tensor_from(ctx, inputs[i], s->n, s->c, s->h, s->w);
        in[i]->requires_grad = TRUE;
    }
    const cs_tensor *y = cs_tensor_nchw(ctx, c->build(ctx, in));
    g_assert(cs_numel(y) == n_out);
    double loss = 0.0;
    for (size_t i = 0; i < n_out; i++) loss += (double)dy[i] * y->data[i];
    return loss;
}

/* Compares the analytic gradient `an` of `values` (n entries) with central differences at
 * FD_SAMPLES sampled entries. */
static void check_fd(const char *what, cs_ctx *ctx, const fd_case *c, float **inputs,
                     float *values, size_t n, const float *an, const float *dy, size_t n_out) {
    const double scale = fmax(1.0, check_max_abs(an, n));
    double worst = 0.0;
    for (int k = 0; k < FD_SAMPLES && k < (int)n; k++) {
        const size_t i = n <= FD_SAMPLES ? (size_t)k : (size_t)g_rand_int_range(rng, 0, (gint32)n);
        const float saved = values[i];
        values[i] = saved + (float)FD_EPS;
        const double plus = eval_loss(ctx, c, inputs, dy, n_out);
        values[i] = saved - (float)FD_EPS;
        const double minus = eval_loss(ctx, c, inputs, dy, n_out);
        values[i] = saved;
        const double fd = (plus - minus) / (2.0 * FD_EPS);
        const double err = fabs(fd - an[i]) / scale;
        if (err > worst) worst = err;
        CHECK_MSG(err <= FD_TOL, "%s: d%s[%zu] finite difference %.6g, backward %.6g", c->name,
                  what, i, fd, an[i]);
    }
    printf("  %-22s d%-16s max |fd - analytic| / scale = %.2e\n", c->name, what, worst);
}

static void run_fd_case(const fd_case *c) {
    cs_paramset *ps = cs_paramset_new();
    for (int i = 0; i < 6 && c->params[i].name; i++) {
        const param_decl *p = &c->params[i];
        cs_declare(ps, p->name, p->counter ? CS_COUNTER : CS_PARAM, p->ndim, p->d[0], p->d[1],
                   p->d[2], p->d[3]);
    }
    cs_paramset_allocate(ps);
    cs_paramset_enable_grads(ps);
    for (int i = 0; i < cs_paramset_count(ps); i++) {
        cs_param *p = cs_paramset_at(ps, i);
        if (p->kind != CS_PARAM) continue;
        const gboolean gamma = g_str_has_suffix(p->name, ".weight") && p->ndim == 1;
        const gboolean beta = g_str_has_suffix(p->name, "bn.bias") ||
                              g_str_has_suffix(p->name, "conv.1.bias");
        for (int64_t j = 0; j < p->numel; j++)
            p->data[j] = gamma                  ? 1.0f + 0.3f * rand_normal()
                         : beta && c->bn_bias   ? c->bn_bias
                                                : 0.5f * rand_normal();
    }
    cs_paramset_to_backend(ps, NULL);
    cs_ctx *ctx = cs_ctx_new(ps, NULL);
    cs_ctx_set_training(ctx, TRUE);

    float *inputs[3];
    size_t in_n[3];
    for (int i = 0; i < c->n_in; i++) {
        const shape4 *s = &c->in[i];
        in_n[i] = (size_t)s->n * s->c * s->h * s->w;
        inputs[i] = g_new(float, in_n[i]);
        fill_input(inputs[i], in_n[i], c);
    }
    /* Analytic gradients of L = sum dy * y. */
    cs_tensor *in[3];
    for (int i = 0; i < c->n_in; i++) {
        const shape4 *s = &c->in[i];
        in[i] = cs_tensor_from(ctx, inputs[i], s->n, s->c, s->h, s->w);
        in[i]->requires_grad = TRUE;
    }
    /* The gradient enters in NCHW; a oneDNN convolution's output is NHWC, so its layout
     * pass and that pass's backward are part of every convolution case. */
    cs_tensor *y = (cs_tensor *)cs_tensor_nchw(ctx, c->build(ctx, in));
    const size_t n_out = cs_numel(y);
    float *dy = g_new(float, n_out);
    for (size_t i = 0; i < n_out; i++) dy[i] = rand_normal();
    memcpy(cs_tensor_grad(ctx, y), dy, sizeof(float) * n_out);
    cs_paramset_zero_grads(ps);
    cs_backward(ctx);
    float *grads[3];
    for (int i = 0; i < c->n_in; i++) {
        grads[i] = g_new0(float, in_n[i]);
        if (in[i]->grad) memcpy(grads[i], in[i]->grad, sizeof(float) * in_n[i]);
    }
    float *pgrads = g_memdup2(ps->grads, sizeof(float) * (ps->n_trainable + 1));

    static const char *const in_names[3] = {"x", "x2", "x3"};
    for (int i = 0; i < c->n_in; i++)
        check_fd(in_names[i], ctx, c, inputs, inputs[i], in_n[i], grads[i], dy, n_out);
    for (int i = 0; i < cs_paramset_count(ps); i++) {
        cs_param *p = cs_paramset_at(ps, i);
        if (p->kind != CS_PARAM) continue;
        check_fd(p->name, ctx, c, inputs, p->data, (size_t)p->numel, pgrads + p->offset, dy,
                 n_out);
    }
    for (int i = 0; i < c->n_in; i++) g_free(inputs[i]), g_free(grads[i]);
    g_free(pgrads);
    g_free(dy);
    cs_ctx_free(ctx);
    cs_paramset_free(ps);
}

/* The operations under test, as the networks call them. */
static cs_tensor *op_conv3(cs_ctx *ctx, cs_tensor **in) { return cs_conv2d(ctx, in[0], "w.weight", "w.bias", 1, 1, 1); }
static cs_tensor *op_conv3s2(cs_ctx *ctx, cs_tensor **in) { return cs_conv2d(ctx, in[0], "w.weight", NULL, 2, 1, 1); }
static cs_tensor *op_conv3d2(cs_ctx *ctx, cs_tensor **in) { return cs_conv2d(ctx, in[0], "w.weight", NULL, 1, 2, 2); }
static cs_tensor *op_conv1(cs_ctx *ctx, cs_tensor **in) { return cs_conv2d(ctx, in[0], "w.weight", NULL, 1, 0, 1); }
static cs_tensor *op_conv1s2(cs_ctx *ctx, cs_tensor **in) { return cs_conv2d(ctx, in[0], "w.weight", NULL, 2, 0, 1); }
static cs_tensor *op_conv7(cs_ctx *ctx, cs_tensor **in) { return cs_conv2d(ctx, in[0], "w.weight", NULL, 1, 3, 1); }
static cs_tensor *op_linear(cs_ctx *ctx, cs_tensor **in) { return cs_linear(ctx, in[0], "lin"); }
static cs_tensor *op_cbr(cs_ctx *ctx, cs_tensor **in) { return cs_cbr(ctx, in[0], "cbr", 1, 1); }
static cs_tensor *op_cb(cs_ctx *ctx, cs_tensor **in) { return cs_cbr(ctx, in[0], "cbr", 1, 0); }
static cs_tensor *op_bn(cs_ctx *ctx, cs_tensor **in) { return cs_batchnorm(ctx, in[0], "bn", 0); }
static cs_tensor *op_relu(cs_ctx *ctx, cs_tensor **in) { return cs_relu(ctx, in[0]); }
static cs_tensor *op_sigmoid(cs_ctx *ctx, cs_tensor **in) { return cs_sigmoid(ctx, in[0]); }
static cs_tensor *op_add(cs_ctx *ctx, cs_tensor **in) { return cs_add(ctx, in[0], in[1], 0); }
static cs_tensor *op_add_relu(cs_ctx *ctx, cs_tensor **in) { return cs_add(ctx, in[0], in[1], 1); }
static cs_tensor *op_mul_channel(cs_ctx *ctx, cs_tensor **in) { return cs_mul_channel(ctx, in[0], in[1]); }
static cs_tensor *op_mul_spatial(cs_ctx *ctx, cs_tensor **in) { return cs_mul_spatial(ctx, in[0], in[1]); }
static cs_tensor *op_concat(cs_ctx *ctx, cs_tensor **in) {
    const cs_tensor *parts[3] = {in[0], in[1], in[2]};
    return cs_concat(ctx, 3, parts);
}
static cs_tensor *op_up2(cs_ctx *ctx, cs_tensor **in) { return cs_upsample(ctx, in[0], 2); }
static cs_tensor *op_up4(cs_ctx *ctx, cs_tensor **in) { return cs_upsample(ctx, in[0], 4); }
static cs_tensor *op_maxpool(cs_ctx *ctx, cs_tensor **in) { return cs_maxpool3s2(ctx, in[0]); }
static cs_tensor *op_gavg(cs_ctx *ctx, cs_tensor **in) { return cs_global_avgpool(ctx, in[0]); }
static cs_tensor *op_gmax(cs_ctx *ctx, cs_tensor **in) { return cs_global_maxpool(ctx, in[0]); }
static cs_tensor *op_cmean(cs_ctx *ctx, cs_tensor **in) { return cs_channel_mean(ctx, in[0]); }
static cs_tensor *op_cmax(cs_ctx *ctx, cs_tensor **in) { return cs_channel_max(ctx, in[0]); }
static cs_tensor *op_outlook(cs_ctx *ctx, cs_tensor **in) { return cs_outlook_attention(ctx, in[0], in[1], 2); }
static cs_tensor *op_ca(cs_ctx *ctx, cs_tensor **in) { return cs_channel_attention(ctx, in[0], "ca"); }
static cs_tensor *op_sa(cs_ctx *ctx, cs_tensor **in) { return cs_spatial_attention(ctx, in[0], "sa"); }

/* Parameter declarations: a weight or bias, and a BatchNorm's five entries. */
#define W(n_, nd_, ...) {.name = n_, .ndim = nd_, .d = {__VA_ARGS__}}
#define BN_PARAMS(prefix, c)                                                            \
    W(prefix ".weight", 1, c), W(prefix ".bias", 1, c), W(prefix ".running_mean", 1, c), \
        W(prefix ".running_var", 1, c), {.name = prefix ".num_batches_tracked", .counter = 1}

static const fd_case fd_cases[] = {
    {.name = "conv3x3+bias", .build = op_conv3, .n_in = 1, .in = {{2, 3, 5, 6}},
     .params = {W("w.weight", 4, 4, 3, 3, 3), W("w.bias", 1, 4)}},
    {.name = "conv3x3 s2", .build = op_conv3s2, .n_in = 1, .in = {{2, 3, 7, 6}},
     .params = {W("w.weight", 4, 4, 3, 3, 3)}},
    {.name = "conv3x3 dil2", .build = op_conv3d2, .n_in = 1, .in = {{1, 2, 6, 7}},
     .params = {W("w.weight", 4, 3, 2, 3, 3)}},
    {.name = "conv1x1", .build = op_conv1, .n_in = 1, .in = {{2, 5, 3, 4}},
     .params = {W("w.weight", 4, 3, 5, 1, 1)}},
    {.name = "conv1x1 s2", .build = op_conv1s2, .n_in = 1, .in = {{2, 4, 5, 5}},
     .params = {W("w.weight", 4, 3, 4, 1, 1)}},
    {.name = "conv7x7 (2->1)", .build = op_conv7, .n_in = 1, .in = {{1, 2, 8, 9}},
     .params = {W("w.weight", 4, 1, 2, 7, 7)}},
    {.name = "linear", .build = op_linear, .n_in = 1, .in = {{2, 6, 3, 3}},
     .params = {W("lin.weight", 2, 5, 6), W("lin.bias", 1, 5)}},
    /* BatchNorm bias 5: no output near the ReLU's kink, which FD could not cross. */
    {.name = "cbr (train BN+ReLU)", .build = op_cbr, .n_in = 1, .in = {{2, 3, 4, 5}},
     .params = {W("cbr.conv.0.weight", 4, 4, 3, 3, 3), BN_PARAMS("cbr.conv.1", 4)},
     .bn_bias = 5.0f},
    {.name = "cb (train BN)", .build = op_cb, .n_in = 1, .in = {{2, 3, 4, 5}},
     .params = {W("cbr.conv.0.weight", 4, 4, 3, 3, 3), BN_PARAMS("cbr.conv.1", 4)}},
    {.name = "batchnorm (train)", .build = op_bn, .n_in = 1, .in = {{3, 4, 3, 2}},
     .params = {BN_PARAMS("bn", 4)}},
    {.name = "relu", .build = op_relu, .n_in = 1, .in = {{2, 3, 4, 4}}, .away_from_zero = 1},
    {.name = "sigmoid", .build = op_sigmoid, .n_in = 1, .in = {{2, 3, 4, 4}}},
    {.name = "add", .build = op_add, .n_in = 2, .in = {{2, 3, 4, 4}, {2, 3, 4, 4}}},
    {.name = "add+relu", .build = op_add_relu, .n_in = 2, .in = {{2, 3, 4, 4}, {2, 3, 4, 4}},
     .away_from_zero = 2},
    {.name = "mul_channel", .build = op_mul_channel, .n_in = 2,
     .in = {{2, 3, 4, 5}, {2, 3, 1, 1}}},
    {.name = "mul_spatial", .build = op_mul_spatial, .n_in = 2,
     .in = {{2, 3, 4, 5}, {2, 1, 4, 5}}},
    {.name = "concat", .build = op_concat, .n_in = 3,
     .in = {{2, 2, 3, 4}, {2, 3, 3, 4}, {2, 1, 3, 4}}},
    {.name = "upsample x2", .build = op_up2, .n_in = 1, .in = {{2, 2, 3, 4}}},
    {.name = "upsample x4", .build = op_up4, .n_in = 1, .in = {{1, 2, 3, 2}}},
    {.name = "maxpool 3x3/2", .build = op_maxpool, .n_in = 1, .in = {{2, 2, 7, 6}},
     .distinct = 1},
    {.name = "global_avgpool", .build = op_gavg, .n_in = 1, .in = {{2, 3, 4, 5}}},
    {.name = "global_maxpool", .build = op_gmax, .n_in = 1, .in = {{2, 3, 4, 5}},
     .distinct = 1},
    {.name = "channel_mean", .build = op_cmean, .n_in = 1, .in = {{2, 4, 3, 5}}},
    {.name = "channel_max", .build = op_cmax, .n_in = 1, .in = {{2, 4, 3, 5}}, .distinct = 1},
    /* 10 rows: more than one attention tile; 2 heads of 4 channels. */
    {.name = "outlook_attention", .build = op_outlook, .n_in = 2,
     .in = {{1, 8, 10, 5}, {1, 162, 10, 5}}},
    {.name = "channel_attention", .build = op_ca, .n_in = 1, .in = {{2, 32, 3, 4}},
     .params = {W("ca.fc1.weight", 4, 2, 32, 1, 1), W("ca.fc2.weight", 4, 32, 2, 1, 1)},
     .distinct = 1},
    {.name = "spatial_attention", .build = op_sa, .n_in = 1, .in = {{2, 3, 6, 5}},
     .params = {W("sa.conv1.weight", 4, 1, 2, 7, 7)}, .distinct = 1},
};

/* ---- part 2: the reference's autograd gradients ------------------------------------------ */

typedef struct {
    const cs_safetensors *st;
    JsonObject *attrs;
    const char *name;
} golden_case;

static float *golden_role(const golden_case *c, const char *role, const cs_st_tensor **t) {
    char *key = g_strdup_printf("%s.%s", c->name, role);
    *t = golden_tensor(c->st, key);
    float *v = *t ? golden_floats(c->st, key, NULL) : NULL;
    g_free(key);
    return v;
}

static cs_tensor *golden_input(cs_ctx *ctx, const golden_case *c, const char *role) {
    const cs_st_tensor *t;
    float *v = golden_role(c, role, &t);
    if (!v) return NULL;
    int d[4] = {1, 1, 1, 1};
    for (int i = 0; i < t->ndim && i < 4; i++) d[i] = (int)t->shape[i];
    cs_tensor *x = cs_tensor_from(ctx, v, d[0], d[1], d[2], d[3]);
    x->requires_grad = TRUE;
    g_free(v);
    return x;
}

static void declare_role(cs_paramset *ps, const golden_case *c, const char *role,
                         const char *name, cs_param_kind kind) {
    const cs_st_tensor *t;
    float *v = golden_role(c, role, &t);
    if (!v) return;
    int64_t d[4] = {0, 0, 0, 0};
    for (int i = 0; i < t->ndim; i++) d[i] = t->shape[i];
    cs_declare(ps, name, kind, t->ndim, d[0], d[1], d[2], d[3]);
    g_free(v);
}

static void fill_role(cs_paramset *ps, const golden_case *c, const char *role, const char *name) {
    const cs_st_tensor *t;
    float *v = golden_role(c, role, &t);
    if (v) memcpy(cs_param_get(ps, name)->data, v, sizeof(float) * t->numel);
    g_free(v);
}

static void compare_role(const golden_case *c, const char *role, const float *got, size_t n) {
    char *key = g_strdup_printf("%s.%s", c->name, role);
    golden_compare(c->st, key, got, n, AUTOGRAD_TOL, 1e-6);
    g_free(key);
}

typedef struct {
    const char *role, *name;
    cs_param_kind kind;
} role_map;

static int run_golden_case(const golden_case *c, const char *op) {
    role_map map[6];
    int n_map = 0;
    const gboolean bias = !strcmp(op, "conv2d") && json_object_get_boolean_member(c->attrs, "bias");
    if (!strcmp(op, "conv2d")) {
        map[n_map++] = (role_map){"w", "conv.weight", CS_PARAM};
        if (bias) map[n_map++] = (role_map){"b", "conv.bias", CS_PARAM};
    } else if (!strcmp(op, "linear")) {
        map[n_map++] = (role_map){"w", "lin.weight", CS_PARAM};
        map[n_map++] = (role_map){"b", "lin.bias", CS_PARAM};
    } else if (!strcmp(op, "batchnorm_train")) {
        map[n_map++] = (role_map){"weight", "bn.weight", CS_PARAM};
        map[n_map++] = (role_map){"bias", "bn.bias", CS_PARAM};
        map[n_map++] = (role_map){"running_mean", "bn.running_mean", CS_BUFFER};
        map[n_map++] = (role_map){"running_var", "bn.running_var", CS_BUFFER};
    } else if (!strcmp(op, "channel_attention")) {
        map[n_map++] = (role_map){"fc1", "ca.fc1.weight", CS_PARAM};
        map[n_map++] = (role_map){"fc2", "ca.fc2.weight", CS_PARAM};
    } else if (!strcmp(op, "spatial_attention")) {
        map[n_map++] = (role_map){"conv1", "sa.conv1.weight", CS_PARAM};
    }
    cs_paramset *ps = cs_paramset_new();
    for (int i = 0; i < n_map; i++) declare_role(ps, c, map[i].role, map[i].name, map[i].kind);
    if (!strcmp(op, "batchnorm_train"))
        cs_declare(ps, "bn.num_batches_tracked", CS_COUNTER, 0, 0, 0, 0, 0);
    cs_paramset_allocate(ps);
    cs_paramset_enable_grads(ps);
    for (int i = 0; i < n_map; i++) fill_role(ps, c, map[i].role, map[i].name);
    cs_paramset_to_backend(ps, NULL);
    cs_ctx *ctx = cs_ctx_new(ps, NULL);
    cs_ctx_set_training(ctx, TRUE);

    cs_tensor *in[2] = {NULL, NULL}, *y = NULL;
    const char *in_roles[2] = {"x", NULL};
    if (!strcmp(op, "conv2d")) {
        y = cs_conv2d(ctx, in[0] = golden_input(ctx, c, "x"), "conv.weight",
                      bias ? "conv.bias" : NULL, (int)json_object_get_int_member(c->attrs, "stride"),
                      (int)json_object_get_int_member(c->attrs, "pad"),
                      (int)json_object_get_int_member(c->attrs, "dil"));
    } else if (!strcmp(op, "linear")) {
        y = cs_linear(ctx, in[0] = golden_input(ctx, c, "x"), "lin");
    } else if (!strcmp(op, "batchnorm_train")) {
        y = cs_batchnorm(ctx, in[0] = golden_input(ctx, c, "x"), "bn", 0);
    } else if (!strcmp(op, "relu")) {
        y = cs_relu(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "sigmoid")) {
        y = cs_sigmoid(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "maxpool")) {
        y = cs_maxpool3s2(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "upsample")) {
        y = cs_upsample(ctx, in[0] = golden_input(ctx, c, "x"),
                        (int)json_object_get_int_member(c->attrs, "factor"));
    } else if (!strcmp(op, "global_avgpool")) {
        y = cs_global_avgpool(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "global_maxpool")) {
        y = cs_global_maxpool(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "channel_mean")) {
        y = cs_channel_mean(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "channel_max")) {
        y = cs_channel_max(ctx, in[0] = golden_input(ctx, c, "x"));
    } else if (!strcmp(op, "outlook_attention")) {
        in_roles[0] = "v", in_roles[1] = "a";
        y = cs_outlook_attention(ctx, in[0] = golden_input(ctx, c, "v"),
                                 in[1] = golden_input(ctx, c, "a"),
                                 (int)json_object_get_int_member(c->attrs, "heads"));
    } else if (!strcmp(op, "mul_channel")) {
        in_roles[1] = "s";
        y = cs_mul_channel(ctx, in[0] = golden_input(ctx, c, "x"), in[1] = golden_input(ctx, c, "s"));
    } else if (!strcmp(op, "mul_spatial")) {
        in_roles[1] = "m";
        y = cs_mul_spatial(ctx, in[0] = golden_input(ctx, c, "x"), in[1] = golden_input(ctx, c, "m"));
    } else if (!strcmp(op, "add")) {
        in_roles[0] = "a", in_roles[1] = "b";
        y = cs_add(ctx, in[0] = golden_input(ctx, c, "a"), in[1] = golden_input(ctx, c, "b"), 0);
    } else if (!strcmp(op, "concat")) {
        in_roles[0] = "a", in_roles[1] = "b";
        const cs_tensor *parts[2] = {in[0] = golden_input(ctx, c, "a"),
                                     in[1] = golden_input(ctx, c, "b")};
        y = cs_concat(ctx, 2, parts);
    } else if (!strcmp(op, "channel_attention")) {
        y = cs_channel_attention(ctx, in[0] = golden_input(ctx, c, "x"), "ca");
    } else if (!strcmp(op, "spatial_attention")) {
        y = cs_spatial_attention(ctx, in[0] = golden_input(ctx, c, "x"), "sa");
    }
    int known = y != NULL;
    if (y) {
        y = (cs_tensor *)cs_tensor_nchw(ctx, y);
        const cs_st_tensor *t;
        float *dy = golden_role(c, "dy", &t);
        if (dy && (size_t)t->numel == cs_numel(y)) {
            memcpy(cs_tensor_grad(ctx, y), dy, sizeof(float) * cs_numel(y));
            if (!strcmp(op, "batchnorm_train")) {
                compare_role(c, "y", y->data, cs_numel(y));
                compare_role(c, "running_mean_out", cs_param_get(ps, "bn.running_mean")->data, y->c);
                compare_role(c, "running_var_out", cs_param_get(ps, "bn.running_var")->data, y->c);
            }
            cs_backward(ctx);
            for (int i = 0; i < 2; i++) {
                if (!in_roles[i] || !in[i]) continue;
                char *role = g_strdup_printf("d%s", in_roles[i]);
                compare_role(c, role, in[i]->grad, cs_numel(in[i]));
                g_free(role);
            }
            for (int i = 0; i < n_map; i++) {
                if (map[i].kind != CS_PARAM) continue;
                const cs_param *p = cs_param_get(ps, map[i].name);
                char *role = g_strdup_printf("d%s", map[i].role);
                compare_role(c, role, ps->grads + p->offset, (size_t)p->numel);
                g_free(role);
            }
        } else {
            CHECK_MSG(0, "%s: no usable dy", c->name);
        }
        g_free(dy);
    }
    cs_ctx_free(ctx);
    cs_paramset_free(ps);
    return known;
}

/* Kernel-level backward passes that no network operation wraps. */
static int run_golden_kernel_case(const golden_case *c, const char *op) {
    const cs_st_tensor *tx, *tdy;
    float *x = golden_role(c, "x", &tx), *dy = golden_role(c, "dy", &tdy);
    int known = 1;
    if (!x || !dy) {
        g_free(x), g_free(dy);
        return 1;
    }
    float *dx = g_new0(float, tx->numel);
    if (!strcmp(op, "softmax")) {
        const cs_st_tensor *ty;
        float *y = golden_role(c, "y", &ty);
        cs_cpu_softmax_rows_backward(dx, dy, y, (size_t)tx->numel / 9, 9);
        g_free(y);
    } else if (!strcmp(op, "unfold")) {
        /* The adjoint of unfold is fold: col2im of the incoming gradient. */
        const int n = (int)tx->shape[0], ch = (int)tx->shape[1], h = (int)tx->shape[2],
                  w = (int)tx->shape[3];
        for (int b = 0; b < n; b++)
            cs_cpu_col2im_accumulate(dx + (size_t)b * ch * h * w, dy + (size_t)b * ch * 9 * h * w,
                                     ch, h, w, 3, 1, 1, 1, w, 0, h);
    } else if (!strcmp(op, "fold")) {
        const int n = (int)tx->shape[0], ch = (int)tx->shape[1] / 9,
                  h = (int)json_object_get_int_member(c->attrs, "h"),
                  w = (int)json_object_get_int_member(c->attrs, "w");
        for (int b = 0; b < n; b++)
            cs_cpu_im2col(dx + (size_t)b * ch * 9 * h * w, dy + (size_t)b * ch * h * w, ch, h, w,
                          3, 1, 1, 1, w, 0, h);
    } else {
        known = 0;
    }
    if (known) compare_role(c, "dx", dx, (size_t)tx->numel);
    g_free(dx), g_free(x), g_free(dy);
    return known;
}

/* Gradients the network never needs: eval-mode BatchNorm (training uses batch statistics)
 * and the losses (tests/test_losses.c). */
static const char *const not_applicable[] = {"batchnorm_eval", "dicebce", "stage2_loss",
                                             "stage1_loss"};

int main(void) {
    rng = g_rand_new_with_seed(20251130);
    printf("== finite differences\n");
    for (size_t i = 0; i < G_N_ELEMENTS(fd_cases); i++) run_fd_case(&fd_cases[i]);

    printf("== PyTorch autograd\n");
    cs_safetensors *st = golden_open("ops_golden.safetensors");
    if (st) {
        JsonParser *parser = json_parser_new();
        JsonArray *cases = golden_cases(st, parser);
        int tested = 0;
        for (guint i = 0; cases && i < json_array_get_length(cases); i++) {
            JsonObject *obj = json_array_get_object_element(cases, i);
            golden_case c = {st, obj, json_object_get_string_member(obj, "name")};
            const char *op = json_object_get_string_member(obj, "op");
            gboolean skip = FALSE;
            for (size_t k = 0; k < G_N_ELEMENTS(not_applicable); k++)
                skip |= !strcmp(op, not_applicable[k]);
            if (skip) continue;
            printf("%s (%s)\n", c.name, op);
            const int known = run_golden_case(&c, op) || run_golden_kernel_case(&c, op);
            CHECK_MSG(known, "op '%s' of case %s has no backward test", op, c.name);
            tested += known;
        }
        printf("%d cases with gradients compared\n", tested);
        CHECK(tested >= 45);
        g_object_unref(parser);
        cs_st_close(st);
    }
    g_rand_free(rng);
    return check_summary("test_grad");
}
