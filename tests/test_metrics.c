/* test_metrics.c — the evaluation metrics of spec §7 (model/train/metrics.c) against the NumPy
 * reference of tools/metrics_ref.py: Kvasir-SEG validation masks as targets with synthetic
 * predictions (shifted, eroded, dilated, blurred, empty, full, exact 0.5 values) and the
 * empty/full-target corner cases, real empty masks of polyp-free frames. Per-image values,
 * the per-image mean (test.py) and the mean of batch means (training loops) must agree to
 * 1e-12 relative, and each case's false alarm (empty mask, over 1% marked) exactly. */
#include <string.h>

#include "golden.h"
#include "losses.h"

#define METRIC_TOL 1e-12

static const char *const columns[6] = {"jaccard", "dice", "recall", "precision", "accuracy",
                                       "f2"};

/* The metadata's column order is the one this test assumes. */
static void check_columns(const cs_safetensors *st) {
    const char *meta = cs_st_metadata(st, "columns");
    CHECK_MSG(meta && !strcmp(meta, "[\"jaccard\", \"dice\", \"recall\", \"precision\", "
                                    "\"accuracy\", \"f2\"]"),
              "unexpected metric columns %s", meta ? meta : "(none)");
}

static void as_row(const cs_metrics *m, double row[6]) {
    row[0] = m->jaccard;
    row[1] = m->dice;
    row[2] = m->recall;
    row[3] = m->precision;
    row[4] = m->accuracy;
    row[5] = m->f2;
}

/* A float64 tensor of the reference (read raw: cs_st_read_f32 would round it). */
static double *golden_doubles(const cs_safetensors *st, const char *name, size_t *numel) {
    const cs_st_tensor *t = golden_tensor(st, name);
    if (!t) return NULL;
    if (t->dtype != CS_DT_F64) {
        CHECK_MSG(0, "%s: expected F64, file has %s", name, cs_dtype_name(t->dtype));
        return NULL;
    }
    double *v = g_new(double, t->numel);
    memcpy(v, t->data, sizeof(double) * (size_t)t->numel); /* little-endian host */
    *numel = (size_t)t->numel;
    return v;
}

/* max over the six metrics of |got - ref| / max(|ref|, tiny) */
static double row_error(const double got[6], const double *ref) {
    double err = 0;
    for (int c = 0; c < 6; c++)
        err = fmax(err, fabs(got[c] - ref[c]) / fmax(fabs(ref[c]), 1e-300));
    return err;
}

int main(void) {
    cs_safetensors *st = golden_open("metrics_golden.safetensors");
    if (!st) return check_summary("test_metrics");
    check_columns(st);
    size_t n_pred = 0, n_target = 0, n_metrics = 0, n_mean = 0, n_bmean = 0;
    float *pred = golden_floats(st, "pred", &n_pred);
    float *target = golden_floats(st, "target", &n_target);
    double *ref = golden_doubles(st, "metrics", &n_metrics);
    double *ref_mean = golden_doubles(st, "mean", &n_mean);
    double *ref_bmean = golden_doubles(st, "batch_mean", &n_bmean);
    size_t n_alarm = 0;
    double *ref_alarm = golden_doubles(st, "false_alarm", &n_alarm);
    const cs_st_tensor *tp = golden_tensor(st, "pred");
    const char *batch_meta = cs_st_metadata(st, "batch");
    if (!pred || !target || !ref || !ref_mean || !ref_bmean || !ref_alarm || !tp || !batch_meta)
        return check_summary("test_metrics");
    const size_t images = (size_t)tp->shape[0];
    const size_t plane = n_pred / images;
    const int batch = atoi(batch_meta);
    CHECK(n_target == n_pred && n_metrics == 6 * images && n_mean == 6 && n_bmean == 6 &&
          n_alarm == images);
    CHECK(images >= 10 && batch > 0);

    double worst = 0;
    cs_metrics sum = {0}, batch_sum = {0}, batch_means = {0};
    int n_batches = 0, in_batch = 0, n_alarms = 0;
    for (size_t i = 0; i < images && n_target == n_pred; i++) {
        cs_metrics m;
        cs_metrics_image(pred + i * plane, target + i * plane, plane, &m);
        double row[6];
        as_row(&m, row);
        const double err = row_error(row, ref + 6 * i);
        worst = fmax(worst, err);
        CHECK_MSG(err <= METRIC_TOL, "image %zu: relative error %.3e (jaccard %.17g vs %.17g)",
                  i, err, row[0], ref[6 * i]);
        const gboolean alarm = cs_is_false_alarm(pred + i * plane, target + i * plane, plane);
        CHECK_MSG(alarm == (ref_alarm[i] == 1.0), "image %zu: false alarm %d, reference %g", i,
                  alarm, ref_alarm[i]);
        n_alarms += alarm;
        cs_metrics_accumulate(&sum, &m);
        /* training-loop averaging: the mean of each batch, then the mean of those */
        cs_metrics_accumulate(&batch_sum, &m);
        if (++in_batch == batch || i + 1 == images) {
            cs_metrics_scale(&batch_sum, 1.0 / in_batch);
            cs_metrics_accumulate(&batch_means, &batch_sum);
            batch_sum = (cs_metrics){0};
            in_batch = 0;
            n_batches++;
        }
    }
    printf("  %zu images: worst per-image relative error %.2e %s; %d false alarms\n", images,
           worst, worst <= METRIC_TOL ? "ok" : "FAIL", n_alarms);
    CHECK(n_alarms >= 4); /* the reference's cases around the 1% line are there */

    double row[6];
    cs_metrics_scale(&sum, 1.0 / (double)images);
    as_row(&sum, row);
    double err = row_error(row, ref_mean);
    printf("  per-image mean: relative error %.2e %s\n", err, err <= METRIC_TOL ? "ok" : "FAIL");
    for (int c = 0; c < 6; c++) printf("    %-10s %.15f\n", columns[c], row[c]);
    CHECK_MSG(err <= METRIC_TOL, "per-image mean: relative error %.3e", err);

    cs_metrics_scale(&batch_means, 1.0 / n_batches);
    as_row(&batch_means, row);
    err = row_error(row, ref_bmean);
    printf("  mean of %d batch means (batch %d): relative error %.2e %s\n", n_batches, batch,
           err, err <= METRIC_TOL ? "ok" : "FAIL");
    CHECK_MSG(err <= METRIC_TOL, "mean of batch means: relative error %.3e", err);

    /* the corner cases of the §7 table, independent of the file */
    const float zero[4] = {0, 0, 0, 0}, one[4] = {1, 1, 1, 1}, half[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    cs_metrics m;
    cs_metrics_image(zero, zero, 4, &m);
    CHECK(m.jaccard == 1 && m.dice == 1 && m.recall == 1 && m.precision == 1 &&
          m.accuracy == 1 && fabs(m.f2 - 1) < 1e-15);
    cs_metrics_image(half, half, 4, &m); /* 0.5 is not > 0.5: both empty */
    CHECK(m.jaccard == 1 && m.accuracy == 1);
    cs_metrics_image(one, zero, 4, &m); /* G empty, P full */
    CHECK(m.jaccard < 1e-15 && m.dice < 1e-15 && m.recall == 1 && m.precision < 1e-15 &&
          m.accuracy == 0 && m.f2 < 1e-14);
    cs_metrics_image(zero, one, 4, &m); /* G full, P empty */
    CHECK(m.jaccard < 1e-15 && m.dice < 1e-15 && m.recall < 1e-15 && m.precision == 1 &&
          m.accuracy == 0 && m.f2 < 1e-14);
    /* false alarms: an empty mask with over 1% marked; never where the mask is not empty */
    CHECK(cs_is_false_alarm(one, zero, 4) && !cs_is_false_alarm(zero, zero, 4) &&
          !cs_is_false_alarm(one, one, 4) && !cs_is_false_alarm(half, zero, 4));
    CHECK(cs_mask_is_empty(half, 4) && !cs_mask_is_empty(one, 4));
    CHECK(cs_marked_fraction(one, 4) == 1 && cs_marked_fraction(half, 4) == 0);

    g_free(pred);
    g_free(target);
    g_free(ref);
    g_free(ref_mean);
    g_free(ref_bmean);
    g_free(ref_alarm);
    cs_st_close(st);
    return check_summary("test_metrics");
}
