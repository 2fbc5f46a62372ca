/* bench_infer.c — inference speed and memory of condseg on this CPU, as ratios taken in
 * the same run: the mask-only forward (165.47 GFLOP at 256x256, spec §3.3) against the
 * time OpenBLAS sgemm would need for those FLOPs at its measured peak, plus the peak
 * resident memory. Also the time between module outputs, to show where time goes.
 *
 *   bench_infer [-w WEIGHTS] [--image IMG] [--runs N] [--all-outputs] [--threads N]
 *
 * Without -w the network is freshly initialised (speed does not depend on the values;
 * flush-to-zero keeps subnormals from skewing it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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


int main(int argc, char **argv) {
    cs_select_blas_kernels(argv); /* what `condseg` runs with; CONDSEG_BLAS_AUTO=0 keeps OpenBLAS's choice */
    char *weights = NULL, *image_path = NULL, *preset = NULL;
    int runs = 5, threads = 0;
    gboolean all_outputs = FALSE;
    GOptionEntry entries[] = {
        {"weights", 'w', 0, G_OPTION_ARG_FILENAME, &weights, "ConDSeg weights (default: fresh)", "FILE"},
        {"image", 0, 0, G_OPTION_ARG_FILENAME, &image_path, "Input image (default: random)", "IMG"},
        {"runs", 0, 0, G_OPTION_ARG_INT, &runs, "Timed runs after one warm-up (default 5)", "N"},
        {"all-outputs", 0, 0, G_OPTION_ARG_NONE, &all_outputs, "Also time all four outputs", NULL},
        {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "Threads (default: all cores)", "N"},
        {"preset", 0, 0, G_OPTION_ARG_STRING, &preset, "Network preset without -w (default condseg-r50)", "NAME"},
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

    const char *corename = cs_blas_kernels();
    const double peak = bench_sgemm_rate(2048, 2048, 2048, 1.0);
    const double conv_rate = bench_sgemm_rate(128, 16384, 1152, 1.0);
    printf("OpenBLAS core %s, %d threads: sgemm 2048^3 %.1f GFLOP/s; conv-shaped "
           "128x16384x1152 %.1f GFLOP/s\n", corename, cs_cpu_threads(), peak, conv_rate);

    cs_model *model = weights ? cs_model_load(weights, &error)
                              : cs_model_new(CS_ARCH_CONDSEG, preset, 1, &error);
    if (!model) {
        fprintf(stderr, "bench_infer: %s\n", error->message);
        return 1;
    }
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
        double *rates = g_new(double, runs);
        for (int r = 0; r < runs; r++) {
            rates[r] = bench_sgemm_rate(2048, 2048, 2048, 0.3);
            /* Module times from the last run only. */
            if (r == runs - 1) {
                st.last = bench_now();
                cs_model_set_probe(model, on_probe, &st);
            }
            double t0 = bench_now();
            cs_model_forward(model, input, 1, size, size, outputs, ptrs, &error);
            times[r] = bench_now() - t0;
            ratios[r] = times[r] / (gflop / rates[r]);
            cs_model_set_probe(model, NULL, NULL);
        }
        qsort(times, runs, sizeof(double), bench_compare_double);
        qsort(ratios, runs, sizeof(double), bench_compare_double);
        qsort(rates, runs, sizeof(double), bench_compare_double);
        const double median = times[runs / 2], ratio = ratios[runs / 2];
        printf("%s forward, batch 1, 256x256: median %.1f ms over %d runs (min %.1f); "
               "%.1f GFLOP/s effective\n", pass ? "all-outputs" : "mask-only", median * 1e3,
               runs, times[0] * 1e3, gflop / median);
        printf("  ratio to %.2f GFLOP at the sgemm peak measured next to each run "
               "(median %.1f GFLOP/s): %.2f\n", gflop, rates[runs / 2], ratio);
        printf("{\"what\":\"condseg_%s_b1\",\"preset\":\"%s\",\"gflop\":%.2f,"
               "\"ms_per_img\":%.1f,\"sgemm_gflops\":%.1f,\"ratio_to_sgemm_peak\":%.3f,"
               "\"blas\":\"%s\"}\n", pass ? "all" : "mask", model->cfg->name, gflop,
               median * 1e3, rates[runs / 2], ratio, corename);
        g_free(ratios);
        g_free(rates);
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
