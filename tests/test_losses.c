/* test_losses.c — the training losses of spec §5 (model/train/losses.c) three ways:
 *  1. every loss case of ops_golden.safetensors (tools/make_golden.py ops: float32 inputs,
 *     value and autograd gradients computed in float64 by the PyTorch reference): value
 *     within 1e-6 relative, gradients within 1e-5 of their scale. The case list comes from
 *     the file's "cases" metadata, so a new loss case is tested without touching this file;
 *  2. central finite differences in double of every input element, for the faithful
 *     (double-sigmoid) and the single-sigmoid variant, on small random inputs — the only
 *     gradient check of the single-sigmoid variant besides 3.;
 *  3. the single-sigmoid variant on a tiny fixed input against values computed once with
 *     PyTorch (float64 autograd; the script is in the comment above the numbers).
 * With the argument "train" instead: 4. the losses on the network outputs stored in the
 * training-step references (tools/make_golden.py train, both stages) reproduce their loss,
 * its parts and the output gradients grad_out.* (the start of the training backward).
 *
 * Usage: test_losses [train] */
#include <json-glib/json-glib.h>
#include <string.h>

#include "golden.h"
#include "losses.h"

#define VALUE_TOL 1e-6  /* relative, value against the float32-stored float64 reference */
#define GRAD_TOL 1e-5   /* max |diff| / max |reference| */
#define FD_TOL 1e-5     /* max |analytic - central difference| / max |analytic| */
#define PY_TOL 1e-6     /* tiny PyTorch case: value relative, gradients relative to scale */

/* ---------------------------------------------------------------------------------------
 * 1. golden cases
 * ------------------------------------------------------------------------------------- */

static float *case_tensor(const cs_safetensors *st, const char *name, const char *r,
                          size_t *n) {
    char *key = g_strdup_printf("%s.%s", name, r);
    float *v = golden_floats(st, key, n);
    g_free(key);
    return v;
}

static void compare_value(const cs_safetensors *st, const char *name, const char *r,
                          double got) {
    float *ref = case_tensor(st, name, r, NULL);
    if (!ref) return;
    const double err = fabs(got - ref[0]) / fmax(fabs((double)ref[0]), 1e-30);
    printf("  %-28s %.9g vs %.9g: rel. error %.2e %s\n", r, got, (double)ref[0], err,
           err <= VALUE_TOL ? "ok" : "FAIL");
    CHECK_MSG(err <= VALUE_TOL, "%s.%s: %.9g vs reference %.9g (rel. error %.2e)", name, r,
              got, (double)ref[0], err);
    g_free(ref);
}

static void compare_grad(const cs_safetensors *st, const char *name, const char *r,
                         const float *got, size_t n) {
    char *key = g_strdup_printf("%s.%s", name, r);
    golden_compare(st, key, got, n, GRAD_TOL, 1e-12);
    g_free(key);
}

/* Height and width of a B x 1 x H x W case tensor. */
static void case_hw(const cs_safetensors *st, const char *name, const char *r, int *h, int *w) {
    char *key = g_strdup_printf("%s.%s", name, r);
    const cs_st_tensor *t = golden_tensor(st, key);
    g_free(key);
    *h = t && t->ndim == 4 ? (int)t->shape[2] : 0;
    *w = t && t->ndim == 4 ? (int)t->shape[3] : 0;
    CHECK_MSG(t && t->ndim == 4, "%s.%s: expected a B x 1 x H x W tensor", name, r);
}

/* Runs one case; returns FALSE when op is not a loss. */
static gboolean run_golden_case(const cs_safetensors *st, const char *name, const char *op) {
    const cs_loss_options faithful = {FALSE};
    if (!strcmp(op, "dicebce")) {
        size_t n = 0, nt = 0;
        float *p = case_tensor(st, name, "p", &n), *t = case_tensor(st, name, "t", &nt);
        if (p && t && n == nt) {
            float *dp = g_new(float, n);
            double loss = cs_loss_dicebce(p, t, n, &faithful, dp);
            compare_value(st, name, "loss", loss);
            compare_grad(st, name, "dp", dp, n);
            /* without a gradient buffer the value is the same */
            CHECK(cs_loss_dicebce(p, t, n, &faithful, NULL) == loss);
            g_free(dp);
        }
        g_free(p);
        g_free(t);
        return TRUE;
    }
    if (!strcmp(op, "stage2_loss")) {
        static const char *const roles[6] = {"mask", "fg", "bg", "uc", "y1", "y2"};
        float *in[6];
        size_t n = 0, ok = 1;
        for (int i = 0; i < 6; i++) {
            size_t ni = 0;
            in[i] = case_tensor(st, name, roles[i], &ni);
            ok &= in[i] != NULL && (i == 0 || ni == n);
            if (i == 0) n = ni;
        }
        int h, w;
        case_hw(st, name, "mask", &h, &w);
        if (ok && h > 0 && w > 0) {
            const int batch = (int)(n / ((size_t)h * w));
            float *d = g_new(float, 4 * n);
            cs_stage2_parts parts;
            double loss = cs_loss_stage2(in[0], in[1], in[2], in[3], in[4], in[5], batch, h, w,
                                         &faithful, d, d + n, d + 2 * n, d + 3 * n, &parts);
            CHECK(loss == parts.total);
            compare_value(st, name, "loss", loss);
            compare_value(st, name, "loss_mask", parts.mask);
            compare_value(st, name, "loss_fg", parts.fg);
            compare_value(st, name, "loss_bg", parts.bg);
            compare_value(st, name, "beta1", parts.beta1);
            compare_value(st, name, "beta2", parts.beta2);
            compare_value(st, name, "loss_comp", parts.comp);
            compare_grad(st, name, "dmask", d, n);
            compare_grad(st, name, "dfg", d + n, n);
            compare_grad(st, name, "dbg", d + 2 * n, n);
            compare_grad(st, name, "duc", d + 3 * n, n);
            /* NULL gradients and parts are allowed and change nothing */
            CHECK(cs_loss_stage2(in[0], in[1], in[2], in[3], in[4], in[5], batch, h, w,
                                 &faithful, NULL, NULL, NULL, NULL, NULL) == loss);
            g_free(d);
        }
        for (int i = 0; i < 6; i++) g_free(in[i]);
        return TRUE;
    }
    if (!strcmp(op, "stage1_loss")) {
        size_t n = 0, na = 0, ny = 0;
        float *pred = case_tensor(st, name, "pred", &n);
        float *aug = case_tensor(st, name, "pred_aug", &na);
        float *y1 = case_tensor(st, name, "y1", &ny);
        if (pred && aug && y1 && n == na && n == ny) {
            float *d = g_new(float, 2 * n);
            double loss = cs_loss_stage1(pred, aug, y1, n, &faithful, d, d + n);
            compare_value(st, name, "loss", loss);
            compare_grad(st, name, "dpred", d, n);
            compare_grad(st, name, "dpred_aug", d + n, n);
            CHECK(cs_loss_stage1(pred, aug, y1, n, &faithful, NULL, NULL) == loss);
            g_free(d);
        }
        g_free(pred);
        g_free(aug);
        g_free(y1);
        return TRUE;
    }
    return FALSE;
}

static void test_golden(void) {
    cs_safetensors *st = golden_open("ops_golden.safetensors");
    if (!st) return;
    JsonParser *parser = json_parser_new();
    JsonArray *cases = golden_cases(st, parser);
    int tested = 0, dicebce = 0, stage2 = 0, stage1 = 0;
    for (guint i = 0; cases && i < json_array_get_length(cases); i++) {
        JsonObject *obj = json_array_get_object_element(cases, i);
        const char *name = json_object_get_string_member(obj, "name");
        const char *op = json_object_get_string_member(obj, "op");
        if (strcmp(op, "dicebce") && strcmp(op, "stage2_loss") && strcmp(op, "stage1_loss"))
            continue;
        printf("%s (%s)\n", name, op);
        if (run_golden_case(st, name, op)) tested++;
        dicebce += !strcmp(op, "dicebce");
        stage2 += !strcmp(op, "stage2_loss");
        stage1 += !strcmp(op, "stage1_loss");
    }
    printf("%d loss cases compared (%d dicebce, %d stage2_loss, %d stage1_loss)\n", tested,
           dicebce, stage2, stage1);
    /* the five cases make_golden.py writes today: none may silently disappear */
    CHECK(dicebce >= 2 && stage2 >= 2 && stage1 >= 1);
    g_object_unref(parser);
    cs_st_close(st);
}

/* ---------------------------------------------------------------------------------------
 * 2. finite differences
 * ------------------------------------------------------------------------------------- */

typedef enum { LOSS_DICEBCE, LOSS_STAGE2, LOSS_STAGE1 } loss_kind;

typedef struct {
    loss_kind kind;
    const char *label;
    int batch, h, w;
    size_t n;                  /* batch·h·w */
    int n_in;                  /* differentiable inputs, then the targets */
    float *in[4], *y1, *y2;
    cs_loss_options opt;
} fd_problem;

/* The loss; grads (n_in buffers, or NULL) receive its gradients. */
static double fd_eval(const fd_problem *p, float **grads) {
    float *g[4] = {NULL, NULL, NULL, NULL};
    if (grads)
        for (int i = 0; i < p->n_in; i++) g[i] = grads[i];
    switch (p->kind) {
    case LOSS_DICEBCE:
        return cs_loss_dicebce(p->in[0], p->y1, p->n, &p->opt, g[0]);
    case LOSS_STAGE2:
        return cs_loss_stage2(p->in[0], p->in[1], p->in[2], p->in[3], p->y1, p->y2, p->batch,
                              p->h, p->w, &p->opt, g[0], g[1], g[2], g[3], NULL);
    case LOSS_STAGE1:
        return cs_loss_stage1(p->in[0], p->in[1], p->y1, p->n, &p->opt, g[0], g[1]);
    }
    return NAN;
}

/* Probabilities in [lo, hi], away from 0.5 by more than the FD step (stage 1 thresholds
 * them: a crossing would make the loss jump). */
static void fill_prob(GRand *rng, float *v, size_t n, double lo, double hi) {
    for (size_t k = 0; k < n; k++) {
        double x;
        do x = g_rand_double_range(rng, lo, hi);
        while (fabs(x - 0.5) < 0.01 && lo < 0.5 && hi > 0.5);
        v[k] = (float)x;
    }
}

/* Soft targets like the resized masks: mostly 0/1, some values in between. */
static void fill_target(GRand *rng, float *v, size_t n) {
    for (size_t k = 0; k < n; k++) {
        double u = g_rand_double(rng);
        v[k] = u < 0.2 ? (float)g_rand_double(rng) : (u < 0.6 ? 1.0f : 0.0f);
    }
}

static void fd_check(fd_problem *p) {
    float *grads[4];
    for (int i = 0; i < p->n_in; i++) grads[i] = g_new(float, p->n);
    const double loss = fd_eval(p, grads);
    CHECK_MSG(isfinite(loss), "%s: loss %g", p->label, loss);
    for (int i = 0; i < p->n_in; i++) {
        double max_err = 0, scale = 0;
        for (size_t k = 0; k < p->n; k++) {
            const float keep = p->in[i][k];
            /* a step relative to the distance from 0 and 1: BCE on probabilities (single
             * sigmoid, consistency terms) has third derivatives ~ 1/p^3 near the ends */
            const double step = 1e-3 * fmin(keep, 1.0f - keep);
            const float hi = (float)(keep + step), lo = (float)(keep - step);
            p->in[i][k] = hi;
            const double l_hi = fd_eval(p, NULL);
            p->in[i][k] = lo;
            const double l_lo = fd_eval(p, NULL);
            p->in[i][k] = keep;
            /* divide by the float-rounded perturbation actually applied */
            const double fd = (l_hi - l_lo) / ((double)hi - (double)lo);
            max_err = fmax(max_err, fabs(fd - grads[i][k]));
            scale = fmax(scale, fabs((double)grads[i][k]));
        }
        const double rel = max_err / fmax(scale, 1e-30);
        printf("  %-40s input %d: max|analytic - FD| / scale = %.2e (scale %.3g) %s\n",
               p->label, i, rel, scale, rel <= FD_TOL ? "ok" : "FAIL");
        CHECK_MSG(rel <= FD_TOL && scale > 0, "%s input %d: FD relative error %.3e", p->label,
                  i, rel);
    }
    for (int i = 0; i < p->n_in; i++) g_free(grads[i]);
}

static void test_finite_differences(void) {
    GRand *rng = g_rand_new_with_seed(2025);
    const int batch = 2, h = 5, w = 6;
    const size_t n = (size_t)batch * h * w;
    float *buf = g_new(float, 6 * n);
    /* empty: a polyp-free frame, y1 = 0 and the background target y2 = 1 everywhere */
    for (int cell = 0; cell < 4; cell++) {
        const int single = cell & 1, empty = cell >> 1;
        for (int variant = 0; variant < 4; variant++) {
            fd_problem p = {0};
            p.batch = batch;
            p.h = h;
            p.w = w;
            p.n = n;
            p.opt.single_sigmoid = single;
            for (int i = 0; i < 4; i++) p.in[i] = buf + (size_t)i * n;
            p.y1 = buf + 4 * n;
            p.y2 = buf + 5 * n;
            fill_target(rng, p.y1, n);
            if (empty) memset(p.y1, 0, sizeof(float) * n);
            for (size_t k = 0; k < n; k++) p.y2[k] = 1.0f - p.y1[k];
            for (int i = 0; i < 4; i++) fill_prob(rng, p.in[i], n, 0.03, 0.97);
            if (variant == 0) {
                p.kind = LOSS_DICEBCE;
                p.n_in = 1;
            } else if (variant == 1 || variant == 2) {
                p.kind = LOSS_STAGE2;
                p.n_in = 4;
                /* variant 2: a small foreground sum, so β ≈ 30 and its gradient dominate */
                if (variant == 2)
                    for (size_t k = 0; k < n; k++) p.in[1][k] *= 0.02f;
            } else {
                p.kind = LOSS_STAGE1;
                p.n_in = 2;
            }
            static const char *const names[4] = {"dicebce", "stage2", "stage2 (small fg)",
                                                 "stage1"};
            char *label = g_strdup_printf("FD %s, %s%s", names[variant],
                                          single ? "single sigmoid" : "double sigmoid",
                                          empty ? ", empty mask" : "");
            p.label = label;
            fd_check(&p);
            g_free(label);
        }
    }
    g_free(buf);
    g_rand_free(rng);
}

/* ---------------------------------------------------------------------------------------
 * 3. single sigmoid against PyTorch on a tiny fixed input
 * -------------------------------------------------------------------------------------
 * Values from /usr/bin/python3, torch 1.13, float64 autograd, with
 *   db1(p, y) = F.binary_cross_entropy(p, y) + 1 - (2 Σ p y + 1) / (Σ p + Σ y + 1)
 *   stage 2:  db1(mask, y1) + β(fg) db1(fg, y1) + β(bg) db1(bg, y2) + comp(fg, bg, uc),
 *             β(p) = 1 / (tanh(Σ p / (H W)) + 1e-15), comp = mean of qf qb + qf qu + qb qu,
 *             q = softmax over the stacked (fg, bg, uc); y2 = 1 - y1; B = H = W = 2
 *   stage 1:  db1(pred, y1) + db1(pred_aug, y1) + F.binary_cross_entropy(pred,
 *             (pred_aug > .5)) + F.binary_cross_entropy(pred_aug, (pred > .5)),
 *             with pred = t_mask, pred_aug = t_fg (t_mask holds an exact 0.5: target 0)
 * and the gradients from torch.autograd.grad. All inputs are multiples of 1/64. */
static const float t_mask[8] = {0.125f, 0.875f,  0.5f,    0.3125f,
                                0.75f,  0.0625f, 0.9375f, 0.4375f};
static const float t_fg[8] = {0.25f,   0.6875f, 0.375f,   0.8125f,
                              0.1875f, 0.5625f, 0.03125f, 0.96875f};
static const float t_bg[8] = {0.71875f, 0.28125f, 0.59375f, 0.15625f,
                              0.84375f, 0.40625f, 0.90625f, 0.09375f};
static const float t_uc[8] = {0.5f, 0.125f, 0.625f, 0.375f, 0.25f, 0.75f, 0.0625f, 0.875f};
static const float t_y1[8] = {1, 0, 0.5f, 1, 0, 1, 0.25f, 0};

static const double py_dicebce = 2.2663398449583805;
static const double py_dicebce_dp[8] = {
    -1.189795918367347, 1.0387755102040817, -0.075510204081632643, -0.58979591836734691,
    0.53877551020408165, -2.1897959183673468, 1.4482993197278911, 0.26099773242630386};
static const double py_stage2 = 6.3648557447434042;
static const double py_stage2_dfg[8] = {
    -1.1948056118906432, 0.31004682163552311, -0.46154939326605898, -0.74084750578210001,
    -0.010092012210336697, -0.82579801670063624, -1.4992612796670837, 5.1238971967421518};
static const double py_stage2_dbg[8] = {
    0.4257529366433927, -1.0197928378452068, -0.23324482126961937, 0.043725030631043063,
    -0.63981566266207146, 0.12414433346963048, -0.075163348418238338, -2.1847450970553708};
static const double py_stage2_duc[8] = {
    0.00059725943033928856, 0.0031501534311852795, -0.0012172762745152721,
    0.0022965409829610434, 0.0033445672769169339, -0.0026604982283468938,
    0.0048159571146990481, -0.0010499125190719758};
static const double py_stage1 = 6.5709812967243515;
static const double py_stage1_dpred[8] = {
    -1.0469387755102042, 0.89591836734693886, 0.17448979591836736, -0.98979591836734693,
    1.0387755102040817, -4.1897959183673468, 3.4482993197278908, -0.024716553287981835};
static const double py_stage1_dpred_aug[8] = {
    -0.50283553875236298, 0.28056367073380306, 0.07977315689981096, 0.34331830740148317,
    -0.45043866026852791, -0.10601014192696612, -4.8988149683923812, 8.0623818525519848};

static void expect(const char *what, double got, double want) {
    const double err = fabs(got - want) / fabs(want);
    printf("  %-28s %.12g vs PyTorch %.12g: rel. error %.2e\n", what, got, want, err);
    CHECK_MSG(err <= PY_TOL, "%s: %.12g vs PyTorch %.12g", what, got, want);
}

static void expect_grad(const char *what, const float *got, const double *want) {
    double err = 0, scale = 0;
    for (int k = 0; k < 8; k++) {
        err = fmax(err, fabs(got[k] - want[k]));
        scale = fmax(scale, fabs(want[k]));
    }
    printf("  %-28s max|diff| / scale = %.2e\n", what, err / scale);
    CHECK_MSG(err / scale <= PY_TOL, "%s: relative error %.3e", what, err / scale);
}

static void test_single_sigmoid_pytorch(void) {
    const cs_loss_options single = {.single_sigmoid = TRUE};
    float y2[8], d[4][8];
    for (int k = 0; k < 8; k++) y2[k] = 1.0f - t_y1[k];
    printf("single sigmoid vs PyTorch (tiny fixed case)\n");
    expect("dicebce", cs_loss_dicebce(t_mask, t_y1, 8, &single, d[0]), py_dicebce);
    expect_grad("dicebce dp", d[0], py_dicebce_dp);
    expect("stage2", cs_loss_stage2(t_mask, t_fg, t_bg, t_uc, t_y1, y2, 2, 2, 2, &single, d[0],
                                    d[1], d[2], d[3], NULL),
           py_stage2);
    expect_grad("stage2 dmask", d[0], py_dicebce_dp); /* L_mask is the dicebce above */
    expect_grad("stage2 dfg", d[1], py_stage2_dfg);
    expect_grad("stage2 dbg", d[2], py_stage2_dbg);
    expect_grad("stage2 duc", d[3], py_stage2_duc);
    expect("stage1", cs_loss_stage1(t_mask, t_fg, t_y1, 8, &single, d[0], d[1]), py_stage1);
    expect_grad("stage1 dpred", d[0], py_stage1_dpred);
    expect_grad("stage1 dpred_aug", d[1], py_stage1_dpred_aug);
    /* options NULL = faithful */
    const cs_loss_options faithful = {FALSE};
    CHECK(cs_loss_dicebce(t_mask, t_y1, 8, NULL, NULL) ==
          cs_loss_dicebce(t_mask, t_y1, 8, &faithful, NULL));
}

/* ---------------------------------------------------------------------------------------
 * 4. the training-step references
 * ------------------------------------------------------------------------------------- */

static void test_train_step(int stage) {
    char *file = g_strdup_printf("train%d_golden.safetensors", stage);
    cs_safetensors *st = golden_open(file);
    g_free(file);
    if (!st) return;
    printf("train%d_golden.safetensors\n", stage);
    const cs_loss_options faithful = {FALSE};
    const char *first = stage == 1 ? "out.pred" : "out.mask";
    const cs_st_tensor *t = golden_tensor(st, first);
    size_t n = 0;
    float *y1 = golden_floats(st, "y1", &n), *y2 = golden_floats(st, "y2", NULL);
    if (!t || !y1 || !y2 || t->ndim != 4 || (size_t)t->numel != n) {
        CHECK_MSG(0, "%s: unexpected layout", first);
    } else if (stage == 1) {
        float *pred = golden_floats(st, "out.pred", NULL);
        float *aug = golden_floats(st, "out.pred_aug", NULL);
        float *d = g_new(float, 2 * n);
        if (pred && aug) {
            double loss = cs_loss_stage1(pred, aug, y1, n, &faithful, d, d + n);
            float *ref = golden_floats(st, "loss", NULL);
            if (ref) {
                double err = fabs(loss - ref[0]) / fabs((double)ref[0]);
                printf("  loss %.9g vs %.9g: rel. error %.2e\n", loss, (double)ref[0], err);
                CHECK_MSG(err <= VALUE_TOL, "stage-1 loss: rel. error %.3e", err);
            }
            g_free(ref);
            golden_compare(st, "grad_out.pred", d, n, GRAD_TOL, 1e-30);
            golden_compare(st, "grad_out.pred_aug", d + n, n, GRAD_TOL, 1e-30);
        }
        g_free(pred);
        g_free(aug);
        g_free(d);
    } else {
        static const char *const outs[4] = {"out.mask", "out.fg", "out.bg", "out.uc"};
        static const char *const grads[4] = {"grad_out.mask", "grad_out.fg", "grad_out.bg",
                                             "grad_out.uc"};
        float *o[4], *d = g_new(float, 4 * n);
        gboolean ok = TRUE;
        for (int i = 0; i < 4; i++) ok &= (o[i] = golden_floats(st, outs[i], NULL)) != NULL;
        if (ok) {
            cs_stage2_parts parts;
            cs_loss_stage2(o[0], o[1], o[2], o[3], y1, y2, (int)t->shape[0], (int)t->shape[2],
                           (int)t->shape[3], &faithful, d, d + n, d + 2 * n, d + 3 * n, &parts);
            const char *names[7] = {"loss", "loss_mask", "loss_fg", "loss_bg",
                                    "beta1", "beta2", "loss_comp"};
            const double got[7] = {parts.total, parts.mask, parts.fg, parts.bg,
                                   parts.beta1, parts.beta2, parts.comp};
            for (int i = 0; i < 7; i++) {
                float *ref = golden_floats(st, names[i], NULL);
                if (!ref) continue;
                double err = fabs(got[i] - ref[0]) / fabs((double)ref[0]);
                printf("  %-10s %.9g vs %.9g: rel. error %.2e\n", names[i], got[i],
                       (double)ref[0], err);
                CHECK_MSG(err <= VALUE_TOL, "stage-2 %s: rel. error %.3e", names[i], err);
                g_free(ref);
            }
            for (int i = 0; i < 4; i++) golden_compare(st, grads[i], d + i * n, n, GRAD_TOL, 1e-30);
        }
        for (int i = 0; i < 4; i++) g_free(o[i]);
        g_free(d);
    }
    g_free(y1);
    g_free(y2);
    cs_st_close(st);
}

/* ---------------------------------------------------------------------------------------
 * 4. an empty mask (a polyp-free frame): DiceBCE against its closed form
 * -------------------------------------------------------------------------------------
 * With y = 0, §5.1 reduces to BCE = mean(-log(1 - s)) and Dice = 1 - 1 / (Σ s + 1), s = σ(p)
 * (p itself with the single sigmoid): finite for every p in [0, 1], and smallest where
 * nothing is marked. */
static void test_empty_mask(void) {
    float p[16], zero[16] = {0}, all_zero_p[16] = {0};
    for (int k = 0; k < 16; k++) p[k] = (float)k / 15.0f; /* 0 ... 1, ends included */
    for (int single = 0; single <= 1; single++) {
        const cs_loss_options opt = {.single_sigmoid = single};
        double bce = 0, sum_s = 0;
        for (int k = 0; k < 16; k++) {
            const double s = single ? p[k] : 1.0 / (1.0 + exp(-(double)p[k]));
            bce += fmin(-log(1.0 - s), 100.0); /* PyTorch clamps each log at -100 */
            sum_s += s;
        }
        const double want = bce / 16 + 1.0 - 1.0 / (sum_s + 1.0);
        const double got = cs_loss_dicebce(p, zero, 16, &opt, NULL);
        printf("  empty mask, %s: DiceBCE %.12g, closed form %.12g\n",
               single ? "single sigmoid" : "double sigmoid", got, want);
        CHECK_MSG(isfinite(got) && fabs(got - want) <= 1e-12 * want,
                  "empty-mask DiceBCE %.17g vs %.17g", got, want);
        CHECK(cs_loss_dicebce(all_zero_p, zero, 16, &opt, NULL) < got);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "train")) {
        test_train_step(1);
        test_train_step(2);
        return check_summary("test_losses train");
    }
    test_golden();
    test_finite_differences();
    test_single_sigmoid_pytorch();
    test_empty_mask();
    return check_summary("test_losses");
}
