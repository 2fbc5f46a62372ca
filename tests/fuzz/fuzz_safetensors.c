/* fuzz_safetensors.c — libFuzzer harness of the safetensors reader (model/io/safetensors.c):
 * any bytes as a .safetensors file; what opens is read back entirely (every tensor as
 * float32 where its dtype allows, every metadata key asked for), as cs_model_load would. */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *path = fuzz_write("input.safetensors", data, size);
    GError *error = NULL;
    cs_safetensors *file = cs_st_open(path, &error);
    if (!file) {
        if (!error || !error->message[0]) abort();   /* every failure says why */
        g_error_free(error);
    } else {
        for (int i = 0; i < cs_st_count(file); i++) {
            const cs_st_tensor *t = cs_st_get(file, i);
            if (cs_st_find(file, t->name) != t) abort();
            float *values = g_new(float, t->numel ? (size_t)t->numel : 1);
            if (!cs_st_read_f32(file, t, values, &error)) g_clear_error(&error);
            g_free(values);
        }
        (void)cs_st_metadata(file, "condseg.input_size");
        (void)cs_st_metadata(file, "condseg.training_state");
        cs_st_close(file);
    }
    g_free(path);
    return 0;
}
