/* bench_train.c — speed and memory of one ConDSeg training step on this CPU (stage 2:
 * forward in training mode with all four outputs, the stage-2 loss, backward, Adam), as a
 * ratio taken in the same run: the step time against the time OpenBLAS sgemm would need,
 * at its measured peak, for 3 x the forward FLOPs per image (forward + backward: 3 x
 * 201.29 GFLOP for the paper's network at 256x256); and the peak resident memory of the
 * process for this batch size (run once per batch size).
 *
 *   bench_train [--batch N] [--size S] [--steps N] [--threads N] [--preset P]
 *               [--precision fp32|bf16]
 *   bench_train --device cuda [--batch 12] [--tf32 off,on] [--steps N] [--budget S]
 *
 * With --device (a GPU): training images per second (the same step: outputs downloaded,
 * the loss on the host, output gradients uploaded, backward, Adam) for each TF32 setting,
 * one JSON line each ("condseg_cuda_train_b12"); no sgemm ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "backend.h"
#include "bench_device.h"
#include "bench_util.h"
#include "condseg.h"
#include "model_internal.h"

/* ---- device mode ------------------------------------------------------------------------ */

typedef struct {
    cs_trainer *trainer;
    cs_model *model;
    const float *x, *y1, *y2;
    int batch, size;
} step_job;

static void train_step(void *user_data) {
    step_job *j = user_data;
    cs_trainer_forward_backward(j->trainer, j->x, NULL, j->y1, j->y2, j->batch, j->size, NULL,
                                NULL);
    cs_trainer_update(j->trainer);
    j->model->params->backend->synchronize(); /* Adam's update is still running otherwise */
}

static int device_bench(cs_model *model, cs_trainer *trainer, const float *x, const float *y1,
                        const float *y2, int batch, int size, const char *tf32, int steps,
                        double budget) {
    int modes[2];
    const int n_modes = bench_tf32_list(tf32, modes, 2);
    if (!n_modes) {
        fprintf(stderr, "bench_train: --tf32: off, on or off,on\n");
        return 2;
    }
    const char *device = cs_model_device(model);
    printf("condseg training step (stage 2, %s) on %s (%s), batch %d at %dx%d\n",
           model->cfg->name, device, bench_device_name(model), batch, size, size);
    step_job job = {trainer, model, x, y1, y2, batch, size};
    for (int m = 0; m < n_modes; m++) {
        cs_set_tf32(modes[m]);
        int timed = 0;
        const double median = bench_median_time(train_step, &job, 2, steps, budget, &timed);
        printf("  TF32 %-3s: %8.1f ms per step, %7.1f images/s (median of %d)\n",
               modes[m] ? "on" : "off", 1e3 * median, batch / median, timed);
        printf("{\"what\":\"condseg_%s_train_b%d\",\"device\":\"%s\",\"gpu\":\"%s\","
               "\"preset\":\"%s\",\"batch\":%d,\"size\":%d,\"tf32\":%s,\"step_ms\":%.2f,"
               "\"images_per_s\":%.2f,\"runs\":%d,\"pool_mb\":%.0f}\n",
               device, batch, device, bench_device_name(model), model->cfg->name, batch, size,
               modes[m] ? "true" : "false", 1e3 * median, batch / median, timed,
               cs_ctx_pool_bytes(model->ctx) / 1e6);
        fflush(stdout);
    }
    cs_set_tf32(FALSE);
    return 0;
}

int main(int argc, char **argv) {
    cs_select_blas_kernels(argv);
    int batch = 2, size = 256, steps = 3, threads = 0;
    char *preset = NULL, *device = NULL, *tf32 = NULL, *precision = NULL;
    double budget = 30.0;
    GOptionEntry entries[] = {
        {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Batch size (default 2)", "N"},
        {"size", 0, 0, G_OPTION_ARG_INT, &size, "Input side (default 256)", "S"},
        {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Timed steps after one warm-up (default 3)", "N"},
        {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "Threads (default: all cores)", "N"},
        {"preset", 0, 0, G_OPTION_ARG_STRING, &preset, "Network preset (default condseg-r50)", "NAME"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &precision, "fp32 (default) or bf16", "P"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu (default), cuda or auto: device mode", "DEVICE"},
        {"tf32", 0, 0, G_OPTION_ARG_STRING, &tf32, "Device mode: TF32 settings (default off)", "off,on"},
        {"budget", 0, 0, G_OPTION_ARG_DOUBLE, &budget, "Device mode: seconds per measurement (default 30)", "S"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *octx = g_option_context_new("- condseg training-step benchmark");
    g_option_context_add_main_entries(octx, entries, NULL);
    GError *error = NULL;
    if (!g_option_context_parse(octx, &argc, &argv, &error) || batch < 1 || size < 16 ||
        size % 16 || steps < 1) {
        fprintf(stderr, "bench_train: %s\n", error ? error->message : "bad --batch/--size/--steps");
        return 2;
    }
    cs_set_num_threads(threads);
    cs_model *model = cs_model_new(CS_ARCH_CONDSEG, preset, 1, &error);
    char *note = NULL;
    if (!model || !cs_model_set_precision(model, precision, &note, &error)) {
        fprintf(stderr, "bench_train: %s\n", error->message);
        return 2;
    }
    /* The device first: the trainer allocates its state where the parameters are. */
    if (bench_device_mode(device) && !bench_use_device(model, device, "bench_train")) return 1;
    cs_trainer *trainer = cs_trainer_new(model, 1e-4, 1e-4, FALSE);
    const size_t plane = (size_t)size * size;
    float *x = g_new(float, (size_t)batch * 3 * plane), *y1 = g_new(float, (size_t)batch * plane),
          *y2 = g_new(float, (size_t)batch * plane);
    GRand *rng = g_rand_new_with_seed(3);
    for (size_t i = 0; i < (size_t)batch * 3 * plane; i++) x[i] = (float)g_rand_double(rng);
    for (size_t i = 0; i < (size_t)batch * plane; i++) {
        /* a disc-shaped target, so the loss is not degenerate */
        const size_t p = i % plane;
        const double dy = (double)(p / size) / size - 0.5, dx = (double)(p % size) / size - 0.5;
        y1[i] = dx * dx + dy * dy < 0.1 ? 1.0f : 0.0f;
        y2[i] = 1.0f - y1[i];
    }
    g_rand_free(rng);
    if (bench_device_mode(device)) {
        const int status = device_bench(model, trainer, x, y1, y2, batch, size, tf32, steps, budget);
        g_free(x), g_free(y1), g_free(y2);
        cs_trainer_free(trainer);
        cs_model_free(model);
        g_option_context_free(octx);
        return status;
    }

    if (note) printf("bench_train: %s\n", note);
    printf("OpenBLAS kernels %s; training step of ConDSeg (stage 2, %s, %s), batch %d at %dx%d\n",
           cs_blas_kernels(), model->cfg->name, cs_model_precision(model), batch, size, size);
    double t0 = bench_now();
    const double flops_before = cs_ctx_conv_flops(model->ctx);
    cs_trainer_forward_backward(trainer, x, NULL, y1, y2, batch, size, NULL, NULL);
    cs_trainer_update(trainer);
    /* The forward's FLOPs as spec §3.3 counts them; the backward costs twice that. */
    const double forward_gflop = (cs_ctx_conv_flops(model->ctx) - flops_before) / 1e9;
    printf("  warm-up step: %.2f s; forward %.2f GFLOP per image\n", bench_now() - t0,
           forward_gflop / batch);
    double *times = g_new(double, steps), *ratios = g_new(double, steps);
    const double gflop = 3.0 * forward_gflop;
    double rate_sum = 0;
    for (int s = 0; s < steps; s++) {
        const double rate = bench_sgemm_rate(2048, 2048, 2048, 0.3);
        rate_sum += rate;
        t0 = bench_now();
        cs_trainer_forward_backward(trainer, x, NULL, y1, y2, batch, size, NULL, NULL);
        cs_trainer_update(trainer);
        times[s] = bench_now() - t0;
        ratios[s] = times[s] / (gflop / rate);
    }
    qsort(times, steps, sizeof(double), bench_compare_double);
    qsort(ratios, steps, sizeof(double), bench_compare_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("  step: median %.2f s over %d steps (%.2f s per image); sgemm peak %.1f GFLOP/s\n",
           times[steps / 2], steps, times[steps / 2] / batch, rate_sum / steps);
    printf("  ratio to %d x 3 x %.2f GFLOP at the sgemm peak measured next to each step: %.2f\n",
           batch, forward_gflop / batch, ratios[steps / 2]);
    printf("  peak resident memory: %.0f MB (weights, gradients and Adam moments: %.0f MB)\n",
           ru.ru_maxrss / 1024.0, 4.0 * (double)model->params->n_trainable * 4 / 1e6);
    printf("{\"what\":\"condseg_train_step\",\"preset\":\"%s\",\"precision\":\"%s\",\"batch\":%d,"
           "\"size\":%d,\"s_per_step\":%.3f,\"ratio_to_sgemm_peak\":%.3f,\"peak_rss_mb\":%.0f,"
           "\"blas\":\"%s\"}\n",
           model->cfg->name, cs_model_precision(model), batch, size, times[steps / 2],
           ratios[steps / 2], ru.ru_maxrss / 1024.0, cs_blas_kernels());
    g_free(times), g_free(ratios), g_free(x), g_free(y1), g_free(y2);
    cs_trainer_free(trainer);
    cs_model_free(model);
    g_option_context_free(octx);
    return 0;
}
