/* test_ops.c — every operation's forward output against our PyTorch reference
 * (tools/make_golden.py ops: inputs drawn in float32, reference computed in float64).
 * The cases, their attributes and tensors come from the golden file, so the case list
 * lives in one place. Tolerance: max |ours - reference| <= 1e-5 x max |reference|.
 * Each op runs through the same tensor-level function the networks call. */
#include <json-glib/json-glib.h>
#include <string.h>

#include "golden.h"
#include "graph.h"
#include "kernels.h"
#include "net.h"
#include "params.h"

#define OP_TOL 1e-5

typedef struct {
    const cs_safetensors *st;
    JsonObject *attrs;
    const char *name;
} op_case;

static char *role(const op_case *c, const char *r) { return g_strdup_printf("%s.%s", c->name, r); }

static int attr(const op_case *c, const char *key) {
    return (int)json_object_get_int_member(c->attrs, key);
}

/* A tensor of the case as an activation (4-D; shorter shapes are padded with 1s). */
static cs_tensor *input(cs_ctx *ctx, const op_case *c, const char *r) {
    char *key = role(c, r);
    const cs_st_tensor *t = golden_tensor(c->st, key);
    float *v = golden_floats(c->st, key, NULL);
    g_free(key);
    if (!t || !v) return NULL;
    int d[4] = {1, 1, 1, 1};
    for (int i = 0; i < t->ndim && i < 4; i++) d[i] = (int)t->shape[i];
    cs_tensor *x = cs_tensor_from(ctx, v, d[0], d[1], d[2], d[3]);
    g_free(v);
    return x;
}

/* Declares parameter `name` with the shape of the case's tensor `r` and fills it. */
static void declare_from(cs_paramset *ps, const op_case *c, const char *r, const char *name,
                         cs_param_kind kind) {
    char *key = role(c, r);
    const cs_st_tensor *t = golden_tensor(c->st, key);
    g_free(key);
    if (!t) return;
    int64_t d[4] = {0, 0, 0, 0};
    for (int i = 0; i < t->ndim; i++) d[i] = t->shape[i];
    cs_declare(ps, name, kind, t->ndim, d[0], d[1], d[2], d[3]);
}

static void fill_from(cs_paramset *ps, const op_case *c, const char *r, const char *name) {
    char *key = role(c, r);
    float *v = golden_floats(c->st, key, NULL);
    g_free(key);
    cs_param *p = cs_param_find(ps, name);
    if (v && p) memcpy(p->data, v, sizeof(float) * p->numel);
    g_free(v);
}

static void compare(const op_case *c, const char *r, const float *got, size_t n) {
    char *key = role(c, r);
    golden_compare(c->st, key, got, n, OP_TOL, 1e-6);
    g_free(key);
}

/* Parameters named as a network would name them, mapped from the case's roles. */
typedef struct {
    const char *role, *name;
    cs_param_kind kind;
} param_map;

static cs_paramset *params_for(const op_case *c, const param_map *map, int n) {
    cs_paramset *ps = cs_paramset_new();
    for (int i = 0; i < n; i++) {
        if (map[i].kind == CS_COUNTER) cs_declare(ps, map[i].name, CS_COUNTER, 0, 0, 0, 0, 0);
        else declare_from(ps, c, map[i].role, map[i].name, map[i].kind);
    }
    cs_paramset_allocate(ps);
    for (int i = 0; i < n; i++)
        if (map[i].kind != CS_COUNTER) fill_from(ps, c, map[i].role, map[i].name);
    return ps;
}

static int run_case(const op_case *c, const char *op) {
    param_map map[8];
    int n_map = 0;
    if (!strcmp(op, "conv2d")) {
        map[n_map++] = (param_map){"w", "conv.weight", CS_PARAM};
        if (json_object_get_boolean_member(c->attrs, "bias"))
            map[n_map++] = (param_map){"b", "conv.bias", CS_PARAM};
    } else if (!strcmp(op, "linear")) {
        map[n_map++] = (param_map){"w", "lin.weight", CS_PARAM};
        map[n_map++] = (param_map){"b", "lin.bias", CS_PARAM};
    } else if (!strcmp(op, "batchnorm_eval")) {
        map[n_map++] = (param_map){"weight", "bn.weight", CS_PARAM};
        map[n_map++] = (param_map){"bias", "bn.bias", CS_PARAM};
        map[n_map++] = (param_map){"running_mean", "bn.running_mean", CS_BUFFER};
        map[n_map++] = (param_map){"running_var", "bn.running_var", CS_BUFFER};
        map[n_map++] = (param_map){NULL, "bn.num_batches_tracked", CS_COUNTER};
    } else if (!strcmp(op, "channel_attention")) {
        map[n_map++] = (param_map){"fc1", "ca.fc1.weight", CS_PARAM};
        map[n_map++] = (param_map){"fc2", "ca.fc2.weight", CS_PARAM};
    } else if (!strcmp(op, "spatial_attention")) {
        map[n_map++] = (param_map){"conv1", "sa.conv1.weight", CS_PARAM};
    }
    cs_paramset *ps = params_for(c, map, n_map);
    cs_paramset_to_backend(ps, NULL);
    cs_ctx *ctx = cs_ctx_new(ps, NULL);
    cs_tensor *y = NULL;
    int known = 1;

    if (!strcmp(op, "conv2d")) {
        y = cs_conv2d(ctx, input(ctx, c, "x"), "conv.weight",
                      n_map > 1 ? "conv.bias" : NULL, attr(c, "stride"), attr(c, "pad"),
                      attr(c, "dil"));
    } else if (!strcmp(op, "linear")) {
        y = cs_linear(ctx, input(ctx, c, "x"), "lin");
    } else if (!strcmp(op, "batchnorm_eval")) {
        y = cs_batchnorm(ctx, input(ctx, c, "x"), "bn", 0);
    } else if (!strcmp(op, "relu")) {
        y = cs_relu(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "sigmoid")) {
        y = cs_sigmoid(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "maxpool")) {
        y = cs_maxpool3s2(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "upsample")) {
        y = cs_upsample(ctx, input(ctx, c, "x"), attr(c, "factor"));
    } else if (!strcmp(op, "global_avgpool")) {
        y = cs_global_avgpool(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "global_maxpool")) {
        y = cs_global_maxpool(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "channel_mean")) {
        y = cs_channel_mean(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "channel_max")) {
        y = cs_channel_max(ctx, input(ctx, c, "x"));
    } else if (!strcmp(op, "softmax")) {
        cs_tensor *x = input(ctx, c, "x");
        y = cs_tensor_new(ctx, x->n, x->c, x->h, x->w);
        cs_cpu_softmax_rows(y->data, x->data, cs_numel(x) / 9, 9);
    } else if (!strcmp(op, "unfold")) {
        /* CDFA's unfold is the convolution's im2col with k 3, padding 1, stride 1. */
        cs_tensor *x = input(ctx, c, "x");
        y = cs_tensor_new(ctx, x->n, x->c * 9, x->h * x->w, 1);
        for (int b = 0; b < x->n; b++)
            cs_cpu_im2col(y->data + (size_t)b * x->c * 9 * x->h * x->w,
                          x->data + (size_t)b * x->c * x->h * x->w, x->c, x->h, x->w, 3, 1, 1,
                          1, x->w, 0, x->h);
    } else if (!strcmp(op, "fold")) {
        cs_tensor *x = input(ctx, c, "x"); /* n x c*9 x L */
        const int h = attr(c, "h"), w = attr(c, "w"), ch = x->c / 9;
        y = cs_tensor_new(ctx, x->n, ch, h, w);
        memset(y->data, 0, sizeof(float) * cs_numel(y));
        for (int b = 0; b < x->n; b++)
            cs_cpu_col2im_accumulate(y->data + (size_t)b * ch * h * w,
                                     x->data + (size_t)b * x->c * h * w, ch, h, w, 3, 1, 1, 1,
                                     w, 0, h);
    } else if (!strcmp(op, "outlook_attention")) {
        y = cs_outlook_attention(ctx, input(ctx, c, "v"), input(ctx, c, "a"), attr(c, "heads"));
    } else if (!strcmp(op, "mul_channel")) {
        y = cs_mul_channel(ctx, input(ctx, c, "x"), input(ctx, c, "s"));
    } else if (!strcmp(op, "mul_spatial")) {
        y = cs_mul_spatial(ctx, input(ctx, c, "x"), input(ctx, c, "m"));
    } else if (!strcmp(op, "add")) {
        y = cs_add(ctx, input(ctx, c, "a"), input(ctx, c, "b"), 0);
    } else if (!strcmp(op, "concat")) {
        const cs_tensor *parts[2] = {input(ctx, c, "a"), input(ctx, c, "b")};
        y = cs_concat(ctx, 2, parts);
    } else if (!strcmp(op, "channel_attention")) {
        y = cs_channel_attention(ctx, input(ctx, c, "x"), "ca");
    } else if (!strcmp(op, "spatial_attention")) {
        y = cs_spatial_attention(ctx, input(ctx, c, "x"), "sa");
    } else {
        known = 0;
    }
    if (y) {
        y = (cs_tensor *)cs_tensor_nchw(ctx, y); /* a oneDNN convolution leaves NHWC */
        compare(c, "y", y->data, cs_numel(y));
    }
    cs_ctx_free(ctx);
    cs_paramset_free(ps);
    return known;
}

/* Training-only operations: their forward and backward tests come with training. */
static const char *const training_ops[] = {"batchnorm_train", "dicebce", "stage2_loss",
                                           "stage1_loss"};

int main(void) {
    cs_safetensors *st = golden_open("ops_golden.safetensors");
    if (!st) return check_summary("test_ops");
    JsonParser *parser = json_parser_new();
    JsonArray *cases = golden_cases(st, parser);
    int tested = 0, deferred = 0;
    for (guint i = 0; cases && i < json_array_get_length(cases); i++) {
        JsonObject *obj = json_array_get_object_element(cases, i);
        op_case c = {st, obj, json_object_get_string_member(obj, "name")};
        const char *op = json_object_get_string_member(obj, "op");
        printf("%s (%s)\n", c.name, op);
        if (run_case(&c, op)) {
            tested++;
            continue;
        }
        gboolean is_training = FALSE;
        for (size_t k = 0; k < G_N_ELEMENTS(training_ops); k++)
            is_training |= !strcmp(op, training_ops[k]);
        CHECK_MSG(is_training, "op '%s' of case %s is not tested", op, c.name);
        printf("  (training operation: tested with the backward passes)\n");
        deferred++;
    }
    printf("%d forward cases compared, %d training cases deferred\n", tested, deferred);
    CHECK(tested >= 40);
    g_object_unref(parser);
    cs_st_close(st);
    return check_summary("test_ops");
}
