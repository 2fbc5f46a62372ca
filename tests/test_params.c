/* test_params.c — the parameter stores of both networks against the official state-dict
 * key lists (tests/data/condseg_keys.tsv and stage1_keys.tsv, from the original code):
 * every name, shape, dtype and the order; the parameter counts of spec §3.3 and §4.1; save/load round trip; and the
 * weights-file errors a user can meet (missing, unexpected, misshapen tensors). */
#include <glib/gstdio.h>
#include <string.h>

#include "check.h"
#include "condseg.h"
#include "net.h"
#include "params.h"
#include "safetensors.h"

static void compare_with_tsv(const cs_paramset *ps, const char *tsv_name) {
    char *path = g_build_filename(g_getenv("CONDSEG_SOURCE"), "tests", "data", tsv_name, NULL);
    char *text = NULL;
    CHECK_MSG(g_file_get_contents(path, &text, NULL, NULL), "cannot read %s", path);
    if (!text) return;
    char **lines = g_strsplit(text, "\n", -1);
    int row = 0;
    for (int i = 1; lines[i] && lines[i][0]; i++, row++) {
        char **f = g_strsplit(lines[i], "\t", 3);
        if (row >= cs_paramset_count(ps)) {
            CHECK_MSG(0, "%s: the network has no entry %d (%s)", tsv_name, row, f[0]);
            g_strfreev(f);
            break;
        }
        const cs_param *p = cs_paramset_at(ps, row);
        char *shape = cs_shape_string(p->ndim, p->shape);
        const char *dtype = p->kind == CS_COUNTER ? "int64" : "float32";
        CHECK_MSG(!strcmp(p->name, f[0]), "%s row %d: name %s, expected %s", tsv_name, row,
                  p->name, f[0]);
        CHECK_MSG(!strcmp(shape, f[1]), "%s: %s has shape %s, expected %s", tsv_name, f[0],
                  shape, f[1]);
        CHECK_MSG(!strcmp(dtype, f[2]), "%s: %s has dtype %s, expected %s", tsv_name, f[0],
                  dtype, f[2]);
        g_free(shape);
        g_strfreev(f);
    }
    CHECK_MSG(row == cs_paramset_count(ps), "%s lists %d entries, the network has %d", tsv_name,
              row, cs_paramset_count(ps));
    g_strfreev(lines);
    g_free(text);
    g_free(path);
}

static void test_key_lists(void) {
    cs_paramset *full = cs_paramset_new();
    cs_condseg_declare(full, &cs_preset_condseg_r50);
    cs_paramset_allocate(full);
    compare_with_tsv(full, "condseg_keys.tsv");
    CHECK_MSG(full->n_trainable == 45552786, "full network: %" G_GINT64_FORMAT " parameters",
              full->n_trainable);
    CHECK_MSG(cs_paramset_count(full) == 937, "full network: %d entries", cs_paramset_count(full));
    CHECK_MSG(full->n_buffer + full->n_counters == 59022, "full network: %" G_GINT64_FORMAT
              " buffer values", full->n_buffer + full->n_counters);
    cs_paramset_free(full);

    cs_paramset *stage1 = cs_paramset_new();
    cs_stage1_declare(stage1, &cs_preset_condseg_r50);
    cs_paramset_allocate(stage1);
    compare_with_tsv(stage1, "stage1_keys.tsv");
    CHECK_MSG(stage1->n_trainable == 8662848, "stage 1: %" G_GINT64_FORMAT " parameters",
              stage1->n_trainable);
    cs_paramset_free(stage1);
}

/* Saves a freshly initialised stage-1 network, reloads it, and checks every value. */
static void test_round_trip(const char *dir) {
    GError *error = NULL;
    cs_model *m = cs_model_new(CS_ARCH_STAGE1, NULL, 42, &error);
    CHECK(m != NULL);
    char *path = g_build_filename(dir, "stage1.safetensors", NULL);
    CHECK(cs_model_save(m, path, &error));
    cs_model *back = cs_model_load(path, &error);
    CHECK_MSG(back != NULL, "reload: %s", error ? error->message : "");
    if (back) {
        cs_model_info a, b;
        cs_model_get_info(m, &a);
        cs_model_get_info(back, &b);
        CHECK(b.arch == CS_ARCH_STAGE1 && a.n_tensors == b.n_tensors &&
              a.n_parameters == b.n_parameters);
    }
    /* Saved values equal the originals bit for bit. */
    cs_safetensors *file = cs_st_open(path, &error);
    CHECK(file != NULL);
    if (file) {
        const cs_st_tensor *t = cs_st_find(file, "layer3.5.conv2.weight");
        CHECK(t && t->dtype == CS_DT_F32 && t->numel == 256 * 256 * 9);
        const cs_st_tensor *c = cs_st_find(file, "layer0.1.num_batches_tracked");
        CHECK(c && c->dtype == CS_DT_I64 && c->ndim == 0);
        CHECK(!strcmp(cs_st_metadata(file, "condseg.arch"), "stage1"));
        CHECK(!strcmp(cs_st_metadata(file, "condseg.preset"), "condseg-r50"));
        cs_st_close(file);
    }
    g_clear_error(&error);
    cs_model_free(back);
    cs_model_free(m);
    g_free(path);
}

/* Writes the stage-1 state dict with one change to dir/variant.safetensors. */
typedef enum { DROP, RESHAPE, EXTRA, NOTHING_KNOWN, DROP_COUNTERS } corruption;

static char *write_variant(const char *dir, corruption what, const char *victim) {
    cs_paramset *ps = cs_paramset_new();
    cs_stage1_declare(ps, &cs_preset_condseg_r50);
    cs_paramset_allocate(ps);
    const int n = cs_paramset_count(ps);
    cs_st_entry *entries = g_new0(cs_st_entry, n + 1);
    float *reshaped = NULL;
    static float extra_data[4];
    int k = 0;
    for (int i = 0; i < n; i++) {
        const cs_param *p = cs_paramset_at(ps, i);
        if (what == DROP && !strcmp(p->name, victim)) continue;
        if (what == DROP_COUNTERS && p->kind == CS_COUNTER) continue;
        if (what == NOTHING_KNOWN && strcmp(p->name, "layer0.0.weight")) continue;
        cs_st_entry *e = &entries[k++];
        e->name = what == NOTHING_KNOWN ? "encoder.conv.weight" : p->name;
        e->ndim = p->ndim;
        memcpy(e->shape, p->shape, sizeof p->shape);
        e->dtype = p->kind == CS_COUNTER ? CS_DT_I64 : CS_DT_F32;
        e->data = p->kind == CS_COUNTER ? (const void *)p->count : (const void *)p->data;
        if (what == RESHAPE && !strcmp(p->name, victim)) {
            e->shape[1] += 1;
            reshaped = g_new0(float, p->numel / p->shape[1] * e->shape[1]);
            e->data = reshaped;
        }
    }
    if (what == EXTRA)
        entries[k++] = (cs_st_entry){.name = victim, .dtype = CS_DT_F32, .ndim = 1,
                                     .shape = {4}, .data = extra_data};
    char *path = g_build_filename(dir, "variant.safetensors", NULL);
    GError *error = NULL;
    CHECK_MSG(cs_st_save(path, entries, k, NULL, &error), "save: %s", error ? error->message : "");
    g_clear_error(&error);
    g_free(reshaped);
    g_free(entries);
    cs_paramset_free(ps);
    return path;
}

static void expect_load_error(const char *dir, corruption what, const char *victim,
                              const char *expect1, const char *expect2) {
    char *path = write_variant(dir, what, victim);
    GError *error = NULL;
    cs_model *m = cs_model_load(path, &error);
    CHECK_MSG(m == NULL, "loading a file with a changed %s succeeded", victim);
    CHECK(error != NULL);
    if (error) {
        CHECK_MSG(strstr(error->message, path) && strstr(error->message, expect1) &&
                      (!expect2 || strstr(error->message, expect2)),
                  "message does not name the problem: %s", error->message);
        printf("  expected error: %s\n", error->message);
    }
    g_clear_error(&error);
    cs_model_free(m);
    g_free(path);
}

int main(void) {
    test_key_lists();
    char *dir = g_dir_make_tmp("condseg-params-XXXXXX", NULL);
    test_round_trip(dir);
    expect_load_error(dir, DROP, "layer2.1.bn2.running_var",
                      "missing tensor 'layer2.1.bn2.running_var'", "expected shape 128");
    expect_load_error(dir, RESHAPE, "layer1.1.0.conv2.weight",
                      "'layer1.1.0.conv2.weight' has shape 64x65x3x3", "expected 64x64x3x3");
    expect_load_error(dir, EXTRA, "head.conv5.weight", "unexpected tensor 'head.conv5.weight'",
                      NULL);
    expect_load_error(dir, NOTHING_KNOWN, "layer0.0.weight", "neither a ConDSeg network",
                      "stage-1");
    /* A trunk without a head (pth2safetensors.py --torchvision-resnet50): said what it is. */
    expect_load_error(dir, DROP, "head.conv_fuse.weight", "holds a ResNet trunk only",
                      "condseg train --init");
    /* num_batches_tracked may be absent (checkpoints older than the buffer): loads. */
    char *path = write_variant(dir, DROP_COUNTERS, NULL);
    GError *error = NULL;
    cs_model *m = cs_model_load(path, &error);
    CHECK_MSG(m != NULL, "a file without num_batches_tracked: %s", error ? error->message : "");
    g_clear_error(&error);
    cs_model_free(m);
    g_free(path);
    check_remove_tree(dir);
    g_free(dir);
    return check_summary("test_params");
}
