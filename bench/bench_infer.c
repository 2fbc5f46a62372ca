/* bench_infer.c — inference speed and memory of condseg on this CPU, as ratios taken in
 * the same run: the mask-only forward (165.47 GFLOP at 256x256, spec §3.3) against the
 * time OpenBLAS sgemm would need for those FLOPs at its measured peak, plus the peak
 * resident memory. Also the time between module outputs, to show where time goes.
 *
 *   bench_infer [-w WEIGHTS] [--image IMG] [--runs N] [--all-outputs] [--threads N]
 *               [--precision fp32|bf16]
 *
 * In bf16 the ratio is also taken to the bf16 roofline: the FLOPs at the rate of a
 * 2048^3 oneDNN bf16 matmul (AMX) measured next to each timed forward.
 *   bench_infer --device cuda [--batch 1,16] [--tf32 off,on] [--runs N] [--budget S]
 *
 * With --device (a GPU): the time per image and the images per second of the mask-only
 * forward (cs_model_forward: input upload and output download included) for each batch
 * size and TF32 setting, one JSON line each ("condseg_cuda_mask_b16"); no sgemm ratios.
 *
 * Without -w the network is freshly initialised (speed does not depend on the values;
 * flush-to-zero keeps subnormals from skewing it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_device.h"
#include "bench_util.h"
#include "condseg.h"
#include "graph.h"
#include "model_internal.h"
#include "kernels.h"
#include "net.h"

typedef struct {
    double last;
    GArray *names;   /* char * */
    GArray *times;   /* double: seconds since the previous probe */
} stage_timer;

static void on_probe(const char *name, const cs_tensor *t, void *user_data) {
    (void)t;
    stage_timer *st = user_data;
    double tn = bench_now();
    char *copy = g_strdup(name);
    double dt = tn - st->last;
    g_array_append_val(st->names, copy);
    g_array_append_val(st->times, dt);
    st->last = tn;
}

/* ---- device mode ------------------------------------------------------------------------ */

typedef struct {
    cs_model *model;
    const float *input;
    float *const *out;
    int batch;
    unsigned outputs;
} forward_job;

static void forward_step(void *user_data) {
    forward_job *j = user_data;
    GError *error = NULL;
    if (!cs_model_forward(j->model, j->input, j->batch, CS_INPUT_SIZE, CS_INPUT_SIZE, j->outputs,
                          j->out, &error)) {
        fprintf(stderr, "bench_infer: %s\n", error->message);
        exit(1);
    }
}

static int device_bench(cs_model *model, const char *batches, const char *tf32, int runs,
                        double budget, gboolean all_outputs) {
    int sizes[8], modes[2];
    const int n_sizes = bench_int_list(batches ? batches : "1", sizes, 8);
    const int n_modes = bench_tf32_list(tf32, modes, 2);
    if (!n_sizes || !n_modes) {
        fprintf(stderr, "bench_infer: --batch: a list like 1,16; --tf32: off, on or off,on\n");
        return 2;
    }
    const char *device = cs_model_device(model);
    printf("condseg %s on %s (%s): mask-only forward at %dx%d, input upload and output "
           "download included\n", model->cfg->name, device, bench_device_name(model),
           CS_INPUT_SIZE, CS_INPUT_SIZE);
    const size_t plane = (size_t)CS_INPUT_SIZE * CS_INPUT_SIZE;
    int biggest = 0;
    for (int i = 0; i < n_sizes; i++) biggest = sizes[i] > biggest ? sizes[i] : biggest;
    float *input = g_new(float, 3 * plane * biggest), *out = g_new(float, 4 * plane * biggest);
    GRand *rng = g_rand_new_with_seed(7);
    for (size_t i = 0; i < 3 * plane * biggest; i++) input[i] = (float)g_rand_double(rng);
    g_rand_free(rng);
    for (int m = 0; m < n_modes; m++) {
        cs_set_tf32(modes[m]);
        for (int pass = 0; pass < (all_outputs ? 2 : 1); pass++) {
            for (int i = 0; i < n_sizes; i++) {
                const int batch = sizes[i];
                float *ptrs[4];
                for (int k = 0; k < 4; k++) ptrs[k] = out + (size_t)k * plane * batch;
                forward_job job = {model, input, ptrs, batch, pass ? CS_OUT_ALL : CS_OUT_MASK};
                int timed = 0;
                const double median = bench_median_time(forward_step, &job, 2, runs, budget, &timed);
                printf("  %s, batch %2d, TF32 %-3s: %8.2f ms per image, %8.1f images/s (median of "
                       "%d)\n", pass ? "all outputs" : "mask", batch, modes[m] ? "on" : "off",
                       1e3 * median / batch, batch / median, timed);
                printf("{\"what\":\"condseg_%s_%s_b%d\",\"device\":\"%s\",\"gpu\":\"%s\","
                       "\"preset\":\"%s\",\"batch\":%d,\"size\":%d,\"tf32\":%s,"
                       "\"ms_per_img\":%.3f,\"images_per_s\":%.2f,\"median_ms\":%.3f,\"runs\":%d,"
                       "\"pool_mb\":%.0f}\n",
                       device, pass ? "all" : "mask", batch, device, bench_device_name(model),
                       model->cfg->name, batch, CS_INPUT_SIZE, modes[m] ? "true" : "false",
                       1e3 * median / batch, batch / median, 1e3 * median, timed,
                       cs_ctx_pool_bytes(model->ctx) / 1e6);
                fflush(stdout);
            }
        }
    }
    cs_set_tf32(FALSE);
    g_free(input), g_free(out);
    return 0;
}

int main(int argc, char **argv) {
    cs_select_blas_kernels(argv); /* what `condseg` runs with; CONDSEG_BLAS_AUTO=0 keeps OpenBLAS's choice */
    char *weights = NULL, *image_path = NULL, *preset = NULL;
    char *device = NULL, *batches = NULL, *tf32 = NULL, *precision = NULL;
    double budget = 20.0;
    int runs = 5, threads = 0;
    gboolean all_outputs = FALSE;
    GOptionEntry entries[] = {
        {"weights", 'w', 0, G_OPTION_ARG_FILENAME, &weights, "ConDSeg weights (default: fresh)", "FILE"},
        {"image", 0, 0, G_OPTION_ARG_FILENAME, &image_path, "Input image (default: random)", "IMG"},
        {"runs", 0, 0, G_OPTION_ARG_INT, &runs, "Timed runs after one warm-up (default 5)", "N"},
        {"all-outputs", 0, 0, G_OPTION_ARG_NONE, &all_outputs, "Also time all four outputs", NULL},
        {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "Threads (default: all cores)", "N"},
        {"preset", 0, 0, G_OPTION_ARG_STRING, &preset, "Network preset without -w (default condseg-r50)", "NAME"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &precision, "fp32 (default) or bf16", "P"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &device, "cpu (default), cuda or auto: device mode", "DEVICE"},
        {"batch", 0, 0, G_OPTION_ARG_STRING, &batches, "Device mode: batch sizes (default 1)", "1,16"},
        {"tf32", 0, 0, G_OPTION_ARG_STRING, &tf32, "Device mode: TF32 settings (default off)", "off,on"},
        {"budget", 0, 0, G_OPTION_ARG_DOUBLE, &budget, "Device mode: seconds per measurement (default 20)", "S"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *octx = g_option_context_new("- condseg inference benchmark");
    g_option_context_add_main_entries(octx, entries, NULL);
    GError *error = NULL;
    if (!g_option_context_parse(octx, &argc, &argv, &error)) {
        fprintf(stderr, "bench_infer: %s\n", error->message);
        return 2;
    }
    if (runs < 1) runs = 1;
    cs_set_num_threads(threads);
    if (bench_device_mode(device)) {
        cs_model *model = weights ? cs_model_load(weights, &error)
                                  : cs_model_new(CS_ARCH_CONDSEG, preset, 1, &error);
        if (!model) {
            fprintf(stderr, "bench_infer: %s\n", error->message);
            return 1;
        }
        int status = bench_use_device(model, device, "bench_infer")
                         ? device_bench(model, batches, tf32, runs, budget, all_outputs)
                         : 1;
        cs_model_free(model);
        g_option_context_free(octx);
        return status;
    }

    const char *corename = cs_blas_kernels();
    const double peak = bench_sgemm_rate(2048, 2048, 2048, 1.0);
    const double conv_rate = bench_sgemm_rate(128, 16384, 1152, 1.0);
    printf("OpenBLAS core %s, %d threads: sgemm 2048^3 %.1f GFLOP/s; conv-shaped "
           "128x16384x1152 %.1f GFLOP/s\n", corename, cs_cpu_threads(), peak, conv_rate);

    cs_model *model = weights ? cs_model_load(weights, &error)
                              : cs_model_new(CS_ARCH_CONDSEG, preset, 1, &error);
    char *note = NULL;
    if (!model || !cs_model_set_precision(model, precision, &note, &error)) {
        fprintf(stderr, "bench_infer: %s\n", error->message);
        return 1;
    }
    if (note) printf("bench_infer: %s\n", note);
    const gboolean bf16 = strcmp(cs_model_precision(model), "bf16") == 0;
    const int size = CS_INPUT_SIZE, plane = size * size;
    float *input = g_new(float, 3 * plane);
    if (image_path) {
        cs_image *img = cs_image_load_bgr(image_path, &error);
        if (!img) {
            fprintf(stderr, "bench_infer: %s\n", error->message);
            return 1;
        }
        guint8 *r = g_malloc(3 * plane);
        cs_resize_linear_u8(img->data, img->width, img->height, r, size, size, 3);
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++) input[c * plane + p] = r[p * 3 + c] / 255.0f;
        g_free(r);
        cs_image_free(img);
    } else {
        GRand *rng = g_rand_new_with_seed(7);
        for (int i = 0; i < 3 * plane; i++) input[i] = (float)g_rand_double(rng);
        g_rand_free(rng);
    }
    float *out = g_new(float, 4 * plane);
    float *ptrs[4] = {out, out + plane, out + 2 * plane, out + 3 * plane};

    for (int pass = 0; pass < (all_outputs ? 2 : 1); pass++) {
        const unsigned outputs = pass ? CS_OUT_ALL : CS_OUT_MASK;
        /* This network's FLOPs, counted on the warm-up run the way spec §3.3 counts them
         * (165.47 / 201.29 GFLOP for the paper's network). */
        const double flops_before = cs_ctx_conv_flops(model->ctx);
        stage_timer st = {0, g_array_new(FALSE, FALSE, sizeof(char *)),
                          g_array_new(FALSE, FALSE, sizeof(double))};
        if (!cs_model_forward(model, input, 1, size, size, outputs, ptrs, &error)) {
            fprintf(stderr, "bench_infer: %s\n", error->message);
            return 1;
        }
        const double gflop = (cs_ctx_conv_flops(model->ctx) - flops_before) / 1e9;
        /* This machine's speed drifts (shared cores): each timed forward is paired with
         * an sgemm measurement taken just before it, and the ratio is the median of the
         * pairs' ratios. */
        double *times = g_new(double, runs), *ratios = g_new(double, runs);
        double *rates = g_new(double, runs), *bf16_rates = g_new(double, runs);
        double *bf16_ratios = g_new(double, runs);
        for (int r = 0; r < runs; r++) {
            rates[r] = bench_sgemm_rate(2048, 2048, 2048, 0.3);
            bf16_rates[r] = bf16 ? bench_dnnl_matmul_rate(2048, 2048, 2048, 1, 0.3) : 0.0;
            /* Module times from the last run only. */
            if (r == runs - 1) {
                st.last = bench_now();
                cs_model_set_probe(model, on_probe, &st);
            }
            double t0 = bench_now();
            cs_model_forward(model, input, 1, size, size, outputs, ptrs, &error);
            times[r] = bench_now() - t0;
            ratios[r] = times[r] / (gflop / rates[r]);
            bf16_ratios[r] = bf16 ? times[r] / (gflop / bf16_rates[r]) : 0.0;
            cs_model_set_probe(model, NULL, NULL);
        }
        qsort(times, runs, sizeof(double), bench_compare_double);
        qsort(ratios, runs, sizeof(double), bench_compare_double);
        qsort(rates, runs, sizeof(double), bench_compare_double);
        qsort(bf16_rates, runs, sizeof(double), bench_compare_double);
        qsort(bf16_ratios, runs, sizeof(double), bench_compare_double);
        const double median = times[runs / 2], ratio = ratios[runs / 2];
        printf("%s forward (%s), batch 1, 256x256: median %.1f ms over %d runs (min %.1f); "
               "%.1f GFLOP/s effective\n", pass ? "all-outputs" : "mask-only",
               cs_model_precision(model), median * 1e3, runs, times[0] * 1e3, gflop / median);
        if (bf16)
            printf("  ratio to %.2f GFLOP at the oneDNN bf16 matmul peak measured next to each "
                   "run (median %.1f GFLOP/s): %.2f\n", gflop, bf16_rates[runs / 2],
                   bf16_ratios[runs / 2]);
        printf("  ratio to %.2f GFLOP at the sgemm peak measured next to each run "
               "(median %.1f GFLOP/s): %.2f\n", gflop, rates[runs / 2], ratio);
        printf("{\"what\":\"condseg_%s_b1\",\"preset\":\"%s\",\"precision\":\"%s\","
               "\"gflop\":%.2f,\"ms_per_img\":%.1f,\"sgemm_gflops\":%.1f,"
               "\"ratio_to_sgemm_peak\":%.3f,\"bf16_gflops\":%.1f,\"ratio_to_bf16_peak\":%.3f,"
               "\"blas\":\"%s\"}\n", pass ? "all" : "mask", model->cfg->name,
               cs_model_precision(model), gflop, median * 1e3, rates[runs / 2], ratio,
               bf16_rates[runs / 2], bf16_ratios[runs / 2], corename);
        g_free(ratios);
        g_free(rates);
        g_free(bf16_rates);
        g_free(bf16_ratios);
        printf("  time to each module output (last run):\n");
        for (guint i = 0; i < st.names->len; i++) {
            char *name = g_array_index(st.names, char *, i);
            printf("    %-10s %7.1f ms\n", name, g_array_index(st.times, double, i) * 1e3);
            g_free(name);
        }
        g_array_free(st.names, TRUE);
        g_array_free(st.times, TRUE);
        g_free(times);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak resident memory: %.1f MB\n", ru.ru_maxrss / 1024.0);
    printf("{\"what\":\"condseg_peak_rss_mb\",\"value\":%.1f}\n", ru.ru_maxrss / 1024.0);
    cs_model_free(model);
    g_free(out);
    g_free(input);
    g_option_context_free(octx);
    return 0;
}
