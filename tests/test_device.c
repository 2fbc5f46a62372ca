/* test_device.c — device selection (cs_model_set_device, cs_device_resolve) in any build,
 * with or without a GPU:
 *  - "bogus" is rejected (CS_ERROR_ARG) and the model stays where it was;
 *  - "cuda" either runs on the GPU (predictions within 2e-4 of the CPU's) or fails with
 *    CS_ERROR_DEVICE and a reason that says what is missing, the model staying on the CPU
 *    with bit-identical predictions;
 *  - "auto" never fails: the GPU, or the CPU with a note saying why (in a build without
 *    CUDA, that); "cpu" comes back from anywhere bit-identically;
 *  - in a CUDA build, the host-emulated CUDA backend ("cuda-emulated") predicts within
 *    2e-4 and the weights make the round trip exactly. */
#include <string.h>

#include "check.h"
#include "condseg.h"

#define SIZE 32
#define TOL 2e-4

static void forward(cs_model *m, const float *x, float *out) {
    GError *error = NULL;
    float *ptrs[4] = {out, out + SIZE * SIZE, out + 2 * SIZE * SIZE, out + 3 * SIZE * SIZE};
    CHECK_MSG(cs_model_forward(m, x, 1, SIZE, SIZE, CS_OUT_ALL, ptrs, &error), "forward: %s",
              error ? error->message : "");
    g_clear_error(&error);
}

static void expect_same(const char *what, const float *got, const float *ref, gboolean exact) {
    const size_t n = 4 * SIZE * SIZE;
    if (exact) {
        CHECK_MSG(memcmp(got, ref, sizeof(float) * n) == 0, "%s: predictions changed", what);
    } else {
        const double err = check_max_abs_diff(got, ref, n);
        CHECK_MSG(err <= TOL, "%s: predictions differ by %.3e", what, err);
        printf("  %s: max|diff| %.2e from the CPU\n", what, err);
    }
}

int main(void) {
    GError *error = NULL;
    cs_model *m = cs_model_new(CS_ARCH_CONDSEG, "condseg-compact", 5, &error);
    g_assert(m);
    float *x = g_new(float, 3 * SIZE * SIZE), *ref = g_new(float, 4 * SIZE * SIZE);
    float *got = g_new(float, 4 * SIZE * SIZE);
    for (int i = 0; i < 3 * SIZE * SIZE; i++) x[i] = (float)((i * 37) % 101) / 100.0f;
    CHECK(strcmp(cs_model_device(m), "cpu") == 0);
    forward(m, x, ref);

    /* an unknown name */
    char *note = (char *)"unset";
    CHECK(!cs_model_set_device(m, "bogus", &note, &error));
    CHECK(error && error->domain == CS_ERROR && error->code == CS_ERROR_ARG &&
          strstr(error->message, "unknown device 'bogus'"));
    printf("  bogus: %s\n", error ? error->message : "(no error)");
    g_clear_error(&error);
    CHECK(cs_device_resolve("gpu", NULL, &error) == NULL && error);
    g_clear_error(&error);
    CHECK(strcmp(cs_model_device(m), "cpu") == 0);

    /* cuda: the GPU, or a clear reason */
    note = NULL;
    if (cs_model_set_device(m, "cuda", &note, &error)) {
        CHECK(strcmp(cs_model_device(m), "cuda") == 0 && note == NULL);
        forward(m, x, got);
        expect_same("cuda", got, ref, FALSE);
    } else {
        CHECK(error && error->domain == CS_ERROR && error->code == CS_ERROR_DEVICE);
#ifdef CONDSEG_HAVE_CUDA
        CHECK(error && (strstr(error->message, "GPU") || strstr(error->message, "NVIDIA")));
#else
        CHECK(error && strstr(error->message, "built without CUDA support"));
#endif
        printf("  cuda: %s\n", error ? error->message : "(no error)");
        g_clear_error(&error);
        CHECK(strcmp(cs_model_device(m), "cpu") == 0);
        forward(m, x, got);
        expect_same("after a failed --device cuda", got, ref, TRUE);
    }

    /* back to the CPU, from wherever the model is */
    CHECK(cs_model_set_device(m, "cpu", &note, &error) && note == NULL);
    CHECK(strcmp(cs_model_device(m), "cpu") == 0);
    forward(m, x, got);
    expect_same("cpu", got, ref, TRUE);

    /* auto */
    CHECK(cs_model_set_device(m, "auto", &note, &error));
    const char *chosen = cs_model_device(m);
    CHECK(strcmp(chosen, cs_device_resolve(NULL, NULL, &error)) == 0);
    printf("  auto: %s%s%s\n", chosen, note ? "; " : "", note ? note : "");
    forward(m, x, got);
    if (strcmp(chosen, "cpu") == 0) {
#ifdef CONDSEG_HAVE_CUDA
        CHECK(note && strstr(note, "running on the CPU"));
#else
        CHECK(note && strstr(note, "built without CUDA") && strstr(note, "running on the CPU"));
#endif
        expect_same("auto (cpu)", got, ref, TRUE);
    } else {
        CHECK(note == NULL);
        expect_same("auto (cuda)", got, ref, FALSE);
    }
    g_free(note);
    CHECK(cs_model_set_device(m, NULL, NULL, &error));
    CHECK(cs_model_set_device(m, "cpu", NULL, &error));

#ifdef CONDSEG_HAVE_CUDA
    /* the CUDA backend's code on the host, and the way back */
    CHECK(cs_model_set_device(m, "cuda-emulated", NULL, &error));
    CHECK(strcmp(cs_model_device(m), "cuda-emulated") == 0);
    forward(m, x, got);
    expect_same("cuda-emulated", got, ref, FALSE);
    CHECK(cs_model_set_device(m, "cpu", NULL, &error));
    forward(m, x, got);
    expect_same("cpu after cuda-emulated", got, ref, TRUE);
#endif
    CHECK_MSG(error == NULL, "unexpected error: %s", error ? error->message : "");
    g_clear_error(&error);
    cs_model_free(m);
    g_free(x), g_free(ref), g_free(got);
    return check_summary("test_device");
}
