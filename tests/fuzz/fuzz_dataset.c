/* fuzz_dataset.c — libFuzzer harness of the dataset reader (model/train/data.c): any bytes as
 * a split list (train.txt) of a dataset folder holding two valid samples, "a" and "b"
 * (8x8 PNG image and mask each, made once), opened as training does. An id that is not
 * a plain name must be refused; one that opens must name a file inside the folder. */
#include <string.h>

#include "condseg.h"
#include "data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *dataset_dir(void) {
    static char *dir = NULL;
    if (dir) return dir;
    dir = g_build_filename(fuzz_dir(), "dataset", NULL);
    const char *subs[] = {"images", "masks"}, *ids[] = {"a", "b"};
    for (int s = 0; s < 2; s++) {
        char *sub = g_build_filename(dir, subs[s], NULL);
        g_mkdir_with_parents(sub, 0700);
        for (int i = 0; i < 2; i++) {
            cs_image *image = cs_image_new(8, 8, s == 0 ? 3 : 1);
            memset(image->data, 40 * (i + 1), (size_t)8 * 8 * image->channels);
            char *name = g_strdup_printf("%s.png", ids[i]);
            char *path = g_build_filename(sub, name, NULL);
            if (!cs_image_save_png(image, path, NULL)) abort();
            g_free(path), g_free(name);
            cs_image_free(image);
        }
        g_free(sub);
    }
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = dataset_dir();
    char *list = fuzz_write("dataset/train.txt", data, size);
    GError *error = NULL;
    cs_dataset *ds = cs_dataset_open(dir, "train", &error);
    if (!ds) {
        if (!error || !error->message[0]) abort();
        g_error_free(error);
    } else {
        for (int i = 0; i < cs_dataset_size(ds); i++) {
            const char *id = cs_dataset_id(ds, i);
            if (strchr(id, '/') || id[0] == '.') abort();   /* reached outside the folder */
            if (!g_str_has_prefix(cs_dataset_image_path(ds, i), dir)) abort();
        }
        cs_dataset_free(ds);
    }
    g_free(list);
    return 0;
}
