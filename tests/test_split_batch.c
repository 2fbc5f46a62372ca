/* test_split_batch.c — a batch split over ranks (data-parallel training, model/train/dist.h)
 * computes what the whole batch computes. Two threads stand in for two ranks, their
 * cs_reducer summing across both; each takes an uneven share (3 and 5 of 8 images):
 *   - the stage-2 and stage-1 losses (batch-wide Dice, β and means): each share gets the
 *     whole batch's loss and the whole batch's gradient for its own elements;
 *   - synchronised BatchNorm (two layers, ReLU fused into the first): the running
 *     statistics, the outputs, and the summed gamma/beta gradients, which pass through
 *     the second layer's input gradient, equal one context's on the whole batch.
 * The reference is the same code unsplit; the split path changes the order of sums only,
 * so the tolerances are float32 rounding (1e-5 relative, 1e-12 for double losses). */
#include <math.h>
#include <string.h>

#include "check.h"
#include "dist.h"
#include "graph.h"
#include "losses.h"
#include "params.h"

enum { BATCH = 8, SIDE = 6, PLANE = SIDE * SIDE, CHANNELS = 3, SPLIT = 3 };

/* ---- two threads as two ranks ------------------------------------------------------------ */

typedef struct {
    GMutex lock;
    GCond cond;
    int arrived, round;
    double acc[64], result[64];
} pair_reducer;

static void pair_sum(double *values, int count, void *user) {
    pair_reducer *p = user;
    g_assert(count <= 64);
    g_mutex_lock(&p->lock);
    const int round = p->round;
    for (int i = 0; i < count; i++) p->acc[i] = (p->arrived ? p->acc[i] : 0.0) + values[i];
    if (++p->arrived == 2) {
        memcpy(p->result, p->acc, sizeof(double) * count);
        p->arrived = 0;
        p->round++;
        g_cond_broadcast(&p->cond);
    } else {
        while (p->round == round) g_cond_wait(&p->cond, &p->lock);
    }
    memcpy(values, p->result, sizeof(double) * count);
    g_mutex_unlock(&p->lock);
}

static pair_reducer pair;
static const cs_reducer reducer = {pair_sum, &pair};

/* The share of rank r: images [first, first + count). */
static int share_first(int r) { return r == 0 ? 0 : SPLIT; }
static int share_count(int r) { return r == 0 ? SPLIT : BATCH - SPLIT; }

typedef void (*rank_fn)(int rank);
static rank_fn running;

static gpointer rank1_thread(gpointer unused) {
    (void)unused;
    running(1);
    return NULL;
}

/* fn(0) here and fn(1) in a second thread, at the same time (they meet in pair_sum). */
static void run_both(rank_fn fn) {
    running = fn;
    GThread *t = g_thread_new("rank1", rank1_thread, NULL);
    fn(0);
    g_thread_join(t);
}

/* ---- data ---------------------------------------------------------------------------------- */

static float prob[4][BATCH * PLANE], target[2][BATCH * PLANE];

static void make_data(void) {
    GRand *rng = g_rand_new_with_seed(11);
    for (int o = 0; o < 4; o++)
        for (int k = 0; k < BATCH * PLANE; k++) prob[o][k] = (float)g_rand_double_range(rng, 0.02, 0.98);
    for (int k = 0; k < BATCH * PLANE; k++) {
        target[0][k] = g_rand_double(rng) < 0.3 ? 1.0f : 0.0f;
        target[1][k] = 1.0f - target[0][k];
    }
    g_rand_free(rng);
}

/* ---- losses ---------------------------------------------------------------------------------- */

static double whole_loss[2], split_loss[2][2];
static float whole_grad[2][4][BATCH * PLANE], split_grad[2][4][BATCH * PLANE];

/* Stage 2 (stage 0 of the arrays) and stage 1 (1) on images [first, first + n). */
static void losses(const cs_loss_options *opt, int first, int n, double *loss, float (*grad)[BATCH * PLANE]) {
    const size_t o = (size_t)first * PLANE;
    loss[0] = cs_loss_stage2(prob[0] + o, prob[1] + o, prob[2] + o, prob[3] + o, target[0] + o,
                             target[1] + o, n, SIDE, SIDE, opt, grad[0] + o, grad[1] + o,
                             grad[2] + o, grad[3] + o, NULL);
}

static void stage1(const cs_loss_options *opt, int first, int n, double *loss, float (*grad)[BATCH * PLANE]) {
    const size_t o = (size_t)first * PLANE;
    *loss = cs_loss_stage1(prob[0] + o, prob[1] + o, target[0] + o, (size_t)n * PLANE, opt,
                           grad[0] + o, grad[1] + o);
}

static void loss_rank(int rank) {
    const cs_loss_options opt = {.reducer = &reducer};
    losses(&opt, share_first(rank), share_count(rank), &split_loss[0][rank], split_grad[0]);
    stage1(&opt, share_first(rank), share_count(rank), &split_loss[1][rank], split_grad[1]);
}

static void test_losses(void) {
    const cs_loss_options opt = {0};
    losses(&opt, 0, BATCH, &whole_loss[0], whole_grad[0]);
    stage1(&opt, 0, BATCH, &whole_loss[1], whole_grad[1]);
    run_both(loss_rank);
    for (int s = 0; s < 2; s++) {
        for (int r = 0; r < 2; r++)
            CHECK_MSG(fabs(split_loss[s][r] - whole_loss[s]) <= 1e-12 * fabs(whole_loss[s]),
                      "stage %d loss, rank %d: %.17g, whole batch %.17g", 2 - s, r,
                      split_loss[s][r], whole_loss[s]);
        for (int o = 0; o < (s == 0 ? 4 : 2); o++) {
            double scale = 0;
            for (int k = 0; k < BATCH * PLANE; k++) scale = fmax(scale, fabs(whole_grad[s][o][k]));
            const double d = check_max_abs_diff(split_grad[s][o], whole_grad[s][o], BATCH * PLANE);
            CHECK_MSG(d <= 1e-6 * scale, "stage %d, gradient of output %d: differs by %g (scale %g)",
                      2 - s, o, d, scale);
        }
    }
    printf("losses: a batch split 3 + 5 over two ranks = the whole batch (stage 2 %.6f, stage 1 %.6f)\n",
           whole_loss[0], whole_loss[1]);
}

/* ---- synchronised BatchNorm -------------------------------------------------------------------- */

static float bn_input[BATCH * CHANNELS * PLANE], bn_out_grad[BATCH * CHANNELS * PLANE];

typedef struct {
    cs_paramset *ps;
    float out[BATCH * CHANNELS * PLANE];
} bn_result;

static bn_result whole_bn, split_bn[2];

static cs_paramset *bn_params(void) {
    cs_paramset *ps = cs_paramset_new();
    for (int l = 1; l <= 2; l++) {
        char name[64];
#define DECLARE(field, kind, ndim)                          \
    g_snprintf(name, sizeof name, "bn%d." field, l);       \
    cs_declare(ps, name, kind, ndim, CHANNELS, 0, 0, 0)
        DECLARE("weight", CS_PARAM, 1);
        DECLARE("bias", CS_PARAM, 1);
        DECLARE("running_mean", CS_BUFFER, 1);
        DECLARE("running_var", CS_BUFFER, 1);
        DECLARE("num_batches_tracked", CS_COUNTER, 0);
#undef DECLARE
    }
    cs_paramset_allocate(ps);
    for (int l = 1; l <= 2; l++)
        for (int c = 0; c < CHANNELS; c++) {
            char name[64];
            g_snprintf(name, sizeof name, "bn%d.weight", l);
            cs_param_get(ps, name)->data[c] = 0.5f + 0.3f * c + 0.2f * l;
            g_snprintf(name, sizeof name, "bn%d.bias", l);
            cs_param_get(ps, name)->data[c] = 0.1f * c - 0.15f * l;
            g_snprintf(name, sizeof name, "bn%d.running_var", l);
            cs_param_get(ps, name)->data[c] = 1.0f;
        }
    cs_paramset_to_backend(ps, NULL);
    cs_paramset_enable_grads(ps);
    return ps;
}

static gboolean bn_nhwc;   /* the layers' maps in NHWC order, as after oneDNN convolutions */

/* bn2(relu(bn1(x))) on images [first, first + n), backward from bn_out_grad. */
static void bn_run(bn_result *res, const cs_reducer *r, int first, int n) {
    res->ps = bn_params();
    cs_ctx *ctx = cs_ctx_new(res->ps, NULL);
    cs_ctx_set_bn_reducer(ctx, r);
    cs_ctx_set_training(ctx, TRUE);
    const size_t image = (size_t)CHANNELS * PLANE, o = (size_t)first * image;
    cs_tensor *x = cs_tensor_from(ctx, bn_input + o, n, CHANNELS, SIDE, SIDE);
    x->nhwc = bn_nhwc;   /* the same values read as NHWC: another input, as good */
    cs_tensor *bn = cs_batchnorm(ctx, cs_batchnorm(ctx, x, "bn1", 1), "bn2", 0);
    CHECK(bn->nhwc == bn_nhwc);   /* the layout the test means to cover */
    cs_tensor *y = (cs_tensor *)cs_tensor_nchw(ctx, bn);
    cs_tensor_read(ctx, y, res->out + o);
    cs_tensor_set_grad(ctx, y, bn_out_grad + o);
    cs_backward(ctx);
    cs_ctx_reset(ctx);
    cs_ctx_free(ctx);
}

static void rank_thread_bn(int rank) {
    bn_run(&split_bn[rank], &reducer, share_first(rank), share_count(rank));
}

static void test_sync_bn(void) {
    GRand *rng = g_rand_new_with_seed(5);
    for (size_t k = 0; k < G_N_ELEMENTS(bn_input); k++) {
        /* per-image offsets: each share's own statistics differ from the whole batch's */
        bn_input[k] = (float)(g_rand_double_range(rng, -1, 1) + 0.3 * (double)(k / (CHANNELS * PLANE)));
        bn_out_grad[k] = (float)g_rand_double_range(rng, -1, 1);
    }
    g_rand_free(rng);
    bn_run(&whole_bn, NULL, 0, BATCH);
    run_both(rank_thread_bn);
    const double d_out = check_max_abs_diff(whole_bn.out, split_bn[0].out, (size_t)SPLIT * CHANNELS * PLANE) +
                         check_max_abs_diff(whole_bn.out + SPLIT * CHANNELS * PLANE,
                                            split_bn[1].out + SPLIT * CHANNELS * PLANE,
                                            (size_t)(BATCH - SPLIT) * CHANNELS * PLANE);
    CHECK_MSG(d_out <= 1e-5, "outputs differ by %g", d_out);
    const cs_paramset *w = whole_bn.ps;
    for (int64_t i = 0; i < w->n_trainable; i++) {
        const double sum = (double)split_bn[0].ps->grads[i] + split_bn[1].ps->grads[i];
        CHECK_MSG(fabs(sum - w->grads[i]) <= 1e-5 * fmax(1.0, fabs(w->grads[i])),
                  "gradient %d: ranks sum to %.8g, whole batch %.8g", (int)i, sum, w->grads[i]);
    }
    for (int64_t i = w->n_trainable; i < w->n_trainable + w->n_buffer; i++)
        for (int r = 0; r < 2; r++)
            CHECK_MSG(fabs(split_bn[r].ps->values[i] - w->values[i]) <= 1e-5,
                      "running statistic %d on rank %d: %.8g, whole batch %.8g", (int)i, r,
                      split_bn[r].ps->values[i], w->values[i]);
    /* Per-rank statistics (no reducer) must differ, or the comparison above shows nothing. */
    bn_result alone;
    bn_run(&alone, NULL, 0, SPLIT);
    CHECK_MSG(check_max_abs_diff(alone.out, whole_bn.out, (size_t)SPLIT * CHANNELS * PLANE) > 1e-2,
              "per-rank BatchNorm should differ from the whole batch's");
    printf("synchronised BatchNorm (%s): outputs within %.1e, gradient sums and running "
           "statistics equal the whole batch's\n", bn_nhwc ? "NHWC" : "NCHW", d_out);
    cs_paramset_free(alone.ps);
    cs_paramset_free(whole_bn.ps);
    cs_paramset_free(split_bn[0].ps);
    cs_paramset_free(split_bn[1].ps);
}

int main(void) {
    g_mutex_init(&pair.lock);
    g_cond_init(&pair.cond);
    make_data();
    test_losses();
    test_sync_bn();
    bn_nhwc = TRUE;
    test_sync_bn();
    return check_failures ? 1 : 0;
}
