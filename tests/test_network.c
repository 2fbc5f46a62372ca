/* test_network.c — the whole networks against our PyTorch reference
 * (tools/make_golden.py net): random weights with realistic BatchNorm statistics, a batch
 * of a real Kvasir-SEG image and a random image. Every module output of spec §3.1 is
 * compared (relative to its scale), and the final probabilities to 1e-4 absolute.
 * Also: a mask-only run computes the same mask and skips the auxiliary head and the
 * uncertainty branch.
 *
 * Usage: test_network full|stage1|compact ("compact": the full network at the
 * condseg-compact preset's widths, the preset of the shipped default model) */
#include <string.h>

#include "condseg.h"
#include "golden.h"
#include "graph.h"
#include "net.h"

/* Module outputs: max |diff| / max |ref| (float32 against the float64 reference). */
#define MODULE_TOL 2e-4
/* Final probabilities: absolute. */
#define PROB_TOL 1e-4

static void capture(const char *name, const cs_tensor *t, void *user_data) {
    GHashTable *seen = user_data;
    GArray *copy = g_array_sized_new(FALSE, FALSE, sizeof(float), (guint)cs_numel(t));
    g_array_append_vals(copy, t->data, (guint)cs_numel(t));
    g_hash_table_insert(seen, g_strdup(name), copy);
}

static const char *const full_probes[] = {
    "x1", "x2", "x3", "x4", "d1", "d2", "d3", "d4", "f_fg", "f_bg", "f_uc",
    "mask_fg", "mask_bg", "mask_uc", "f_fg4", "f_bg4", "f_fg3", "f_bg3", "f_fg2", "f_bg2",
    "f_fg1", "f_bg1", "f4", "f3", "f2", "f1", "f_small", "f_middle", "f_large", "mask"};
static const char *const stage1_probes[] = {"x1", "x2", "x3", "x4", "pred"};

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "full";
    const gboolean full = strcmp(kind, "stage1") != 0;
    char *weights_name = g_strdup_printf("%s_weights.safetensors", kind);
    char *golden_name = g_strdup_printf("%s_golden.safetensors", kind);
    char *weights = golden_path(weights_name);
    cs_safetensors *st = golden_open(golden_name);
    GError *error = NULL;
    cs_model *model = cs_model_load(weights, &error);
    CHECK_MSG(model != NULL, "%s", error ? error->message : "");
    if (!st || !model) return check_summary("test_network");

    const cs_st_tensor *in = golden_tensor(st, "input");
    float *input = golden_floats(st, "input", NULL);
    const int batch = (int)in->shape[0], h = (int)in->shape[2], w = (int)in->shape[3];
    const size_t plane = (size_t)h * w;

    /* Everything, with probes. */
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                             (GDestroyNotify)g_array_unref);
    cs_model_set_probe(model, capture, seen);
    const unsigned outputs = full ? CS_OUT_ALL : CS_OUT_MASK;
    const int k = full ? 4 : 1;
    float *out = g_new(float, (size_t)k * batch * plane);
    float *ptrs[4];
    for (int i = 0; i < k; i++) ptrs[i] = out + (size_t)i * batch * plane;
    gint64 t0 = g_get_monotonic_time();
    CHECK(cs_model_forward(model, input, batch, h, w, outputs, ptrs, &error));
    printf("%s network, batch %d at %dx%d: %.2f s\n", kind, batch, w, h,
           (g_get_monotonic_time() - t0) / 1e6);

    const char *const *probes = full ? full_probes : stage1_probes;
    const int n_probes = full ? G_N_ELEMENTS(full_probes) : G_N_ELEMENTS(stage1_probes);
    for (int i = 0; i < n_probes; i++) {
        GArray *got = g_hash_table_lookup(seen, probes[i]);
        CHECK_MSG(got != NULL, "module output %s was not produced", probes[i]);
        if (!got) continue;
        char *ref = g_strdup_printf("out.%s", probes[i]);
        golden_compare(st, ref, (const float *)got->data, got->len, MODULE_TOL, 1e-3);
        g_free(ref);
    }
    /* The returned outputs, absolute error on probabilities. */
    static const char *const out_names[4] = {"mask", "mask_fg", "mask_bg", "mask_uc"};
    for (int i = 0; i < k; i++) {
        char *ref = g_strdup_printf("out.%s", full ? out_names[i] : "pred");
        float *r = golden_floats(st, ref, NULL);
        if (r) {
            double err = check_max_abs_diff(ptrs[i], r, (size_t)batch * plane);
            printf("  output %-8s max |p - p_ref| = %.2e %s\n", full ? out_names[i] : "pred", err,
                   err <= PROB_TOL ? "ok" : "FAIL");
            CHECK_MSG(err <= PROB_TOL, "%s: %.3e above %.0e", ref, err, PROB_TOL);
        }
        g_free(r);
        g_free(ref);
    }

    if (full) {
        /* Mask alone: the same mask, without the auxiliary head or the uncertainty branch. */
        g_hash_table_remove_all(seen);
        float *mask = g_new(float, (size_t)batch * plane);
        t0 = g_get_monotonic_time();
        CHECK(cs_model_forward(model, input, batch, h, w, CS_OUT_MASK, &mask, &error));
        printf("mask only: %.2f s\n", (g_get_monotonic_time() - t0) / 1e6);
        CHECK_MSG(check_max_abs_diff(mask, ptrs[0], (size_t)batch * plane) == 0.0,
                  "mask-only run differs from the full run");
        CHECK_MSG(!g_hash_table_contains(seen, "f_uc") && !g_hash_table_contains(seen, "mask_fg") &&
                      !g_hash_table_contains(seen, "mask_uc"),
                  "mask-only run computed the auxiliary head or the uncertainty branch");
        CHECK(g_hash_table_contains(seen, "f_fg") && g_hash_table_contains(seen, "mask"));
        g_free(mask);
    }

    g_hash_table_destroy(seen);
    g_free(out);
    g_free(input);
    cs_model_free(model);
    cs_st_close(st);
    g_free(weights);
    g_free(weights_name);
    g_free(golden_name);
    char *summary = g_strdup_printf("test_network %s", kind);
    const int status = check_summary(summary);
    g_free(summary);
    return status;
}
