/* bench_device.h — what the benchmarks' device mode (--device cuda) shares: the device and
 * GPU name, lists of settings ("1,16", "off,on"), TF32, and the median of timed runs under
 * a time budget. The CPU mode of each benchmark is unchanged. */
#ifndef CONDSEG_BENCH_DEVICE_H
#define CONDSEG_BENCH_DEVICE_H

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "condseg.h"
#ifdef CONDSEG_HAVE_CUDA
#include "backend_cuda.h"
#endif

/* --device other than cpu: the device mode. */
static inline gboolean bench_device_mode(const char *device) {
    return device && strcmp(device, "cpu") != 0;
}

/* Moves the model; prints where it runs. FALSE (message printed) when it cannot. */
static inline gboolean bench_use_device(cs_model *model, const char *device, const char *prog) {
    GError *error = NULL;
    char *note = NULL;
    if (!cs_model_set_device(model, device, &note, &error)) {
        fprintf(stderr, "%s: --device %s: %s\n", prog, device, error->message);
        g_error_free(error);
        return FALSE;
    }
    if (note) fprintf(stderr, "%s: %s\n", prog, note);
    g_free(note);
    return TRUE;
}

/* The GPU's name for the records ("cpu" elsewhere). */
static inline const char *bench_device_name(const cs_model *model) {
#ifdef CONDSEG_HAVE_CUDA
    if (strcmp(cs_model_device(model), "cuda") == 0 && cs_cuda_device_description())
        return cs_cuda_device_description();
#endif
    return cs_model_device(model);
}

/* "1,16" -> {1, 16}; at most `max` positive values. Returns the count (0: bad list). */
static inline int bench_int_list(const char *text, int *values, int max) {
    int n = 0;
    char **parts = g_strsplit(text ? text : "", ",", -1);
    for (char **p = parts; *p && n < max; p++) {
        char *end = NULL;
        const long v = strtol(*p, &end, 10);
        if (!**p || *end || v < 1) {
            n = 0;
            break;
        }
        values[n++] = (int)v;
    }
    g_strfreev(parts);
    return n;
}

/* "off,on" -> {0, 1}. Returns the count (0: bad list). */
static inline int bench_tf32_list(const char *text, int *values, int max) {
    int n = 0;
    char **parts = g_strsplit(text ? text : "off", ",", -1);
    for (char **p = parts; *p && n < max; p++) {
        if (!strcmp(*p, "off")) values[n++] = 0;
        else if (!strcmp(*p, "on")) values[n++] = 1;
        else {
            n = 0;
            break;
        }
    }
    g_strfreev(parts);
    return n;
}

/* Runs `step` `warmup` times, then up to `runs` timed times (at least 3, fewer than `runs`
 * once `budget` seconds have passed); returns the median in seconds. */
typedef void (*bench_step_fn)(void *user_data);

static inline double bench_median_time(bench_step_fn step, void *user_data, int warmup, int runs,
                                       double budget, int *timed) {
    for (int i = 0; i < warmup; i++) step(user_data);
    double *t = g_new(double, runs > 0 ? runs : 1);
    int n = 0;
    const double start = bench_now();
    while (n < runs && (n < 3 || bench_now() - start < budget)) {
        const double t0 = bench_now();
        step(user_data);
        t[n++] = bench_now() - t0;
    }
    qsort(t, n, sizeof(double), bench_compare_double);
    const double median = t[n / 2];
    g_free(t);
    if (timed) *timed = n;
    return median;
}

#endif
