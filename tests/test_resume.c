/* test_resume.c — resuming a training run from what interruptions leave behind (issue 10),
 * in the library and under the sanitizers (label "sanitize"): a tiny synthetic dataset
 * (4 + 2 images of 32x32 made here), the compact preset, two epochs of two steps.
 *
 *   - stopped after step 1 and resumed: no memory error (AddressSanitizer caught a
 *     use-after-free of the run folder's name on every --resume);
 *   - the checkpoint of epoch 1 put back after epoch 2 finished (what a kill between
 *     epoch 2's train_log.csv row and its checkpoint leaves, and what a kill between
 *     the old two renames left: weights of one step, state of another), with temporary
 *     files of killed writes beside it: the resume removes those, does not duplicate
 *     the epoch-2 row, and ends with the uninterrupted run's weights and log, byte for
 *     byte.
 */
#include "check.h"
#include "condseg.h"

#include <string.h>

static void make_dataset(const char *dir) {
    const char *subs[] = {"images", "masks"};
    GRand *rng = g_rand_new_with_seed(7);
    for (int s = 0; s < 2; s++) {
        char *sub = g_build_filename(dir, subs[s], NULL);
        g_mkdir_with_parents(sub, 0755);
        for (int i = 0; i < 6; i++) {
            cs_image *im = cs_image_new(32, 32, s == 0 ? 3 : 1);
            for (size_t k = 0; k < (size_t)32 * 32 * im->channels; k++)
                im->data[k] = s == 0 ? (uint8_t)g_rand_int_range(rng, 0, 256)
                                     : (k % 32 > 10 && k / 32 < 20 ? 255 : 0);
            char *name = g_strdup_printf("s%d.png", i);
            char *path = g_build_filename(sub, name, NULL);
            GError *error = NULL;
            CHECK(cs_image_save_png(im, path, &error));
            g_clear_error(&error);
            g_free(path), g_free(name);
            cs_image_free(im);
        }
        g_free(sub);
    }
    g_rand_free(rng);
    char *train = g_build_filename(dir, "train.txt", NULL), *val = g_build_filename(dir, "val.txt", NULL);
    g_file_set_contents(train, "s0\ns1\ns2\ns3\n", -1, NULL);
    g_file_set_contents(val, "s4\ns5\n", -1, NULL);
    g_free(train), g_free(val);
}

static gboolean train(const char *data, const char *run, gboolean resume, long max_steps) {
    cs_train_options o;
    cs_train_options_defaults(&o, 2);
    const char *data_dirs[] = {data, NULL};
    o.data_dirs = data_dirs, o.run_dir = run, o.preset = "condseg-compact";
    o.image_size = 32, o.batch = 2, o.epochs = resume ? 0 : 2, o.seed = 5, o.workers = 1;
    o.max_steps = max_steps, o.device = "cpu";
    GError *error = NULL;
    const gboolean ok = cs_train(&o, resume, NULL, NULL, NULL, &error);
    CHECK_MSG(ok, "%s %s: %s", resume ? "resume" : "train", run, error ? error->message : "");
    g_clear_error(&error);
    return ok;
}

static char *file_text(const char *dir, const char *name, gsize *length) {
    char *path = g_build_filename(dir, name, NULL), *text = NULL;
    if (!g_file_get_contents(path, &text, length, NULL)) text = NULL;
    g_free(path);
    return text;
}

/* Same bytes in dir_a/name and dir_b/name. */
static void check_same_file(const char *dir_a, const char *dir_b, const char *name) {
    gsize la = 0, lb = 0;
    char *a = file_text(dir_a, name, &la), *b = file_text(dir_b, name, &lb);
    CHECK_MSG(a && b && la == lb && memcmp(a, b, la) == 0, "%s differs between %s and %s", name,
              dir_a, dir_b);
    g_free(a), g_free(b);
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
    gsize n = 0;
    char *text = file_text(from_dir, name, &n);
    char *to = g_build_filename(to_dir, name, NULL);
    CHECK(text && g_file_set_contents(to, text, (gssize)n, NULL));
    g_free(to), g_free(text);
}

static gboolean exists(const char *dir, const char *name) {
    char *path = g_build_filename(dir, name, NULL);
    const gboolean e = g_file_test(path, G_FILE_TEST_EXISTS);
    g_free(path);
    return e;
}

int main(void) {
    char *tmp = g_dir_make_tmp("condseg-resume-XXXXXX", NULL);
    char *data = g_build_filename(tmp, "data", NULL);
    char *ref = g_build_filename(tmp, "ref", NULL), *stepped = g_build_filename(tmp, "stepped", NULL);
    char *killed = g_build_filename(tmp, "killed", NULL), *saved = g_build_filename(tmp, "epoch1", NULL);
    make_dataset(data);

    train(data, ref, FALSE, 0);

    /* stopped mid-epoch and resumed */
    if (train(data, stepped, FALSE, 1) && train(data, stepped, TRUE, 0)) {
        check_same_file(ref, stepped, "last.safetensors");
        check_same_file(ref, stepped, "train_log.csv");
    }

    /* an earlier checkpoint back after epoch 2 (as a kill just before epoch 2's leaves) */
    g_mkdir_with_parents(saved, 0755);
    if (train(data, killed, FALSE, 2)) {   /* step 2: epoch 1's last, before its validation */
        copy_file(killed, saved, "state.safetensors");
        copy_file(killed, saved, "last.safetensors");
        train(data, killed, TRUE, 0);
        copy_file(saved, killed, "state.safetensors");
        const char *orphans[] = {"state.safetensors.AbC123", "last.safetensors.x1Y2z3",
                                 "train_log.csv.Qq0Qq0"};
        for (size_t i = 0; i < G_N_ELEMENTS(orphans); i++) {
            char *path = g_build_filename(killed, orphans[i], NULL);
            g_file_set_contents(path, "partial", -1, NULL);
            g_free(path);
        }
        char *keep = g_build_filename(killed, "notes.txt.AbC123", NULL);
        g_file_set_contents(keep, "not ours", -1, NULL);
        if (train(data, killed, TRUE, 0)) {
            check_same_file(ref, killed, "last.safetensors");
            check_same_file(ref, killed, "best.safetensors");
            check_same_file(ref, killed, "train_log.csv");
            for (size_t i = 0; i < G_N_ELEMENTS(orphans); i++)
                CHECK_MSG(!exists(killed, orphans[i]), "%s was not removed", orphans[i]);
            CHECK_MSG(g_file_test(keep, G_FILE_TEST_EXISTS), "a file not condseg's was removed");
        }
        /* the weights lagging behind the checkpoint (a kill between its two writes) */
        copy_file(saved, killed, "last.safetensors");
        if (train(data, killed, TRUE, 0)) check_same_file(ref, killed, "last.safetensors");
        g_free(keep);
    }

    check_remove_tree(tmp);
    g_free(tmp), g_free(data), g_free(ref), g_free(stepped), g_free(killed), g_free(saved);
    return check_summary("test_resume");
}
