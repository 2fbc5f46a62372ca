/* params.c — the parameter store: declaration, one-allocation layout, lookup by
 * state-dict name, and loading/saving through safetensors with every mismatch named. */
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "condseg.h"
#include "safetensors.h"

static void param_free(gpointer p) {
    cs_param *param = p;
    g_free(param->name);
    g_free(param);
}

cs_paramset *cs_paramset_new(void) {
    cs_paramset *ps = g_new0(cs_paramset, 1);
    ps->list = g_ptr_array_new_with_free_func(param_free);
    ps->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    return ps;
}

void cs_paramset_free(cs_paramset *ps) {
    if (!ps) return;
    g_hash_table_destroy(ps->by_name);
    g_ptr_array_free(ps->list, TRUE);
    if (ps->backend && !ps->backend->host_memory) {
        if (ps->dev_values) ps->backend->release(ps->dev_values);
        if (ps->dev_grads) ps->backend->release(ps->dev_grads);
    }
    free(ps->values);
    free(ps->grads);
    g_free(ps->counters);
    g_free(ps);
}

void cs_declare(cs_paramset *ps, const char *name, cs_param_kind kind, int ndim, int64_t d0,
                int64_t d1, int64_t d2, int64_t d3) {
    g_assert(!ps->values && "declare before allocating");
    g_assert(!g_hash_table_contains(ps->by_name, name));
    cs_param *p = g_new0(cs_param, 1);
    p->name = g_strdup(name);
    p->kind = kind;
    p->ndim = ndim;
    const int64_t dims[4] = {d0, d1, d2, d3};
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = dims[i];
        p->numel *= dims[i];
    }
    g_ptr_array_add(ps->list, p);
    g_hash_table_insert(ps->by_name, p->name, p);
}

void cs_paramset_allocate(cs_paramset *ps) {
    int64_t n_param = 0, n_buffer = 0;
    int n_counter = 0;
    for (guint i = 0; i < ps->list->len; i++) {
        cs_param *p = g_ptr_array_index(ps->list, i);
        if (p->kind == CS_PARAM) n_param += p->numel;
        else if (p->kind == CS_BUFFER) n_buffer += p->numel;
        else n_counter++;
    }
    ps->n_trainable = n_param;
    ps->n_buffer = n_buffer;
    ps->n_counters = n_counter;
    /* 64-byte alignment for vector loads; +1 so that an empty network still allocates. */
    size_t bytes = sizeof(float) * (size_t)(n_param + n_buffer + 1);
    bytes = (bytes + 63) / 64 * 64;
    ps->values = aligned_alloc(64, bytes);
    if (!ps->values) g_error("out of memory allocating %zu bytes of parameters", bytes);
    memset(ps->values, 0, bytes);
    ps->counters = g_new0(int64_t, n_counter + 1);
    int64_t off_param = 0, off_buffer = n_param;
    int off_counter = 0;
    for (guint i = 0; i < ps->list->len; i++) {
        cs_param *p = g_ptr_array_index(ps->list, i);
        if (p->kind == CS_PARAM) {
            p->offset = off_param;
            off_param += p->numel;
            p->data = ps->values + p->offset;
        } else if (p->kind == CS_BUFFER) {
            p->offset = off_buffer;
            off_buffer += p->numel;
            p->data = ps->values + p->offset;
        } else {
            p->offset = off_counter++;
            p->count = ps->counters + p->offset;
        }
    }
}

static size_t value_bytes(int64_t n) { return (sizeof(float) * (size_t)(n + 1) + 63) / 64 * 64; }

gboolean cs_paramset_to_backend(cs_paramset *ps, const cs_backend *backend) {
    if (!backend) backend = &cs_backend_cpu;
    g_assert(!ps->backend || ps->backend == backend);
    ps->backend = backend;
    if (backend->host_memory) {
        ps->dev_values = ps->values;
        ps->dev_grads = ps->grads;
        return TRUE;
    }
    if (!ps->dev_values) {
        ps->dev_values = backend->alloc(value_bytes(ps->n_trainable + ps->n_buffer));
        if (!ps->dev_values) return FALSE;
    }
    cs_paramset_sync_to_backend(ps);
    return TRUE;
}

void cs_paramset_sync_to_backend(cs_paramset *ps) {
    if (!ps->backend || ps->backend->host_memory) return;
    ps->backend->upload(ps->dev_values, ps->values,
                        sizeof(float) * (size_t)(ps->n_trainable + ps->n_buffer));
}

void cs_paramset_sync_from_backend(cs_paramset *ps) {
    if (!ps->backend || ps->backend->host_memory) return;
    ps->backend->download(ps->values, ps->dev_values,
                          sizeof(float) * (size_t)(ps->n_trainable + ps->n_buffer));
    if (ps->grads && ps->dev_grads)
        ps->backend->download(ps->grads, ps->dev_grads, sizeof(float) * (size_t)ps->n_trainable);
}

void cs_paramset_enable_grads(cs_paramset *ps) {
    if (ps->grads) return;
    const size_t bytes = value_bytes(ps->n_trainable);
    ps->grads = aligned_alloc(64, bytes);
    if (!ps->grads) g_error("out of memory allocating %zu bytes of gradients", bytes);
    memset(ps->grads, 0, bytes);
    const cs_backend *be = ps->backend ? ps->backend : &cs_backend_cpu;
    if (be->host_memory) {
        ps->dev_grads = ps->grads;
    } else {
        ps->dev_grads = be->alloc(bytes);
        if (!ps->dev_grads) g_error("out of memory on the %s for %zu bytes of gradients", be->name, bytes);
        be->zero(ps->dev_grads, bytes);
    }
}

void cs_paramset_zero_grads(cs_paramset *ps) {
    if (!ps->dev_grads) return;
    const cs_backend *be = ps->backend ? ps->backend : &cs_backend_cpu;
    be->zero(ps->dev_grads, sizeof(float) * (size_t)ps->n_trainable);
}

cs_param *cs_param_find(const cs_paramset *ps, const char *name) {
    return g_hash_table_lookup(ps->by_name, name);
}

cs_param *cs_param_get(const cs_paramset *ps, const char *name) {
    cs_param *p = cs_param_find(ps, name);
    if (!p) g_error("internal error: the network uses a parameter it never declared: %s", name);
    return p;
}

int cs_paramset_count(const cs_paramset *ps) { return (int)ps->list->len; }

cs_param *cs_paramset_at(const cs_paramset *ps, int index) {
    return g_ptr_array_index(ps->list, index);
}

char *cs_shape_string(int ndim, const int64_t *shape) {
    if (ndim == 0) return g_strdup("scalar");
    GString *s = g_string_new(NULL);
    for (int i = 0; i < ndim; i++)
        g_string_append_printf(s, i ? "x%" G_GINT64_FORMAT : "%" G_GINT64_FORMAT, shape[i]);
    return g_string_free(s, FALSE);
}

/* A loaded shape matches when the dims agree; a counter may also be stored as [1]. */
static gboolean shape_matches(const cs_param *p, const cs_st_tensor *t) {
    if (p->kind == CS_COUNTER) return t->numel == 1 && t->ndim <= 1;
    if (t->ndim != p->ndim) return FALSE;
    for (int i = 0; i < p->ndim; i++)
        if (t->shape[i] != p->shape[i]) return FALSE;
    return TRUE;
}

static gboolean load_counter(const cs_st_tensor *t, int64_t *dst) {
    switch (t->dtype) {
    case CS_DT_I64: memcpy(dst, t->data, 8); return TRUE;
    case CS_DT_I32: {
        int32_t v;
        memcpy(&v, t->data, 4);
        *dst = v;
        return TRUE;
    }
    default: return FALSE;
    }
}

/* The index of the first NaN or infinity among v[0..n), or -1: such a weight silently
 * turns every output into NaN (a black mask), so a file holding one is refused. */
int64_t cs_first_non_finite(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return i;
    return -1;
}

/* Problems beyond this many are counted, not listed: one wrong file can mismatch all. */
#define CS_MAX_LISTED 12

gboolean cs_paramset_load(cs_paramset *ps, const cs_safetensors *file, GError **error) {
    return cs_paramset_load_except(ps, file, NULL, error);
}

gboolean cs_paramset_load_except(cs_paramset *ps, const cs_safetensors *file,
                                 const char *foreign_prefix, GError **error) {
    GString *problems = g_string_new(NULL);
    int n_problems = 0;
#define PROBLEM(...)                                                              \
    do {                                                                          \
        if (n_problems++ < CS_MAX_LISTED) {                                       \
            g_string_append(problems, "\n  ");                                     \
            g_string_append_printf(problems, __VA_ARGS__);                        \
        }                                                                         \
    } while (0)

    for (guint i = 0; i < ps->list->len; i++) {
        cs_param *p = g_ptr_array_index(ps->list, i);
        const cs_st_tensor *t = cs_st_find(file, p->name);
        char *want = cs_shape_string(p->ndim, p->shape);
        if (!t) {
            if (p->kind == CS_COUNTER) *p->count = 0;
            else PROBLEM("missing tensor '%s' (expected shape %s)", p->name, want);
        } else if (!shape_matches(p, t)) {
            char *got = cs_shape_string(t->ndim, t->shape);
            PROBLEM("tensor '%s' has shape %s, expected %s", p->name, got, want);
            g_free(got);
        } else if (p->kind == CS_COUNTER) {
            if (!load_counter(t, p->count))
                PROBLEM("tensor '%s' has dtype %s, expected I64", p->name,
                        cs_dtype_name(t->dtype));
        } else {
            GError *e = NULL;
            int64_t bad = -1;
            if (!cs_st_read_f32(file, t, p->data, &e)) {
                PROBLEM("%s", e->message);
                g_error_free(e);
            } else if ((bad = cs_first_non_finite(p->data, p->numel)) >= 0) {
                PROBLEM("tensor '%s' holds a non-finite value (%g at index %" G_GINT64_FORMAT
                        "): expected finite weights", p->name, p->data[bad], bad);
            }
        }
        g_free(want);
    }
    for (int i = 0; i < cs_st_count(file); i++) {
        const cs_st_tensor *t = cs_st_get(file, i);
        if (foreign_prefix && g_str_has_prefix(t->name, foreign_prefix)) continue;
        if (!cs_param_find(ps, t->name)) PROBLEM("unexpected tensor '%s'", t->name);
    }
#undef PROBLEM
    if (n_problems) {
        if (n_problems > CS_MAX_LISTED)
            g_string_append_printf(problems, "\n  ... and %d more", n_problems - CS_MAX_LISTED);
        g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                    "weights file '%s' does not fit the network (%d problem%s):%s",
                    cs_st_path(file),
                    n_problems, n_problems == 1 ? "" : "s", problems->str);
        g_string_free(problems, TRUE);
        return FALSE;
    }
    g_string_free(problems, TRUE);
    return TRUE;
}

gboolean cs_paramset_save(const cs_paramset *ps, const char *path,
                          const char *const *metadata, GError **error) {
    return cs_paramset_save_with(ps, path, NULL, 0, metadata, error);
}

gboolean cs_paramset_save_with(const cs_paramset *ps, const char *path, const cs_st_entry *extra,
                               int n_extra, const char *const *metadata, GError **error) {
    const int n = (int)ps->list->len;
    cs_st_entry *entries = g_new0(cs_st_entry, n + n_extra);
    if (n_extra) memcpy(entries + n, extra, sizeof *extra * (size_t)n_extra);
    for (int i = 0; i < n; i++) {
        const cs_param *p = g_ptr_array_index(ps->list, i);
        entries[i].name = p->name;
        entries[i].ndim = p->ndim;
        memcpy(entries[i].shape, p->shape, sizeof(p->shape));
        if (p->kind == CS_COUNTER) {
            entries[i].dtype = CS_DT_I64;
            entries[i].data = p->count;
        } else {
            entries[i].dtype = CS_DT_F32;
            entries[i].data = p->data;
        }
    }
    gboolean ok = cs_st_save(path, entries, n + n_extra, metadata, error);
    g_free(entries);
    return ok;
}
