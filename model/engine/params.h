/* params.h — the parameter store of a network: every state-dict entry (weights, biases,
 * BatchNorm running statistics and counters) with its PyTorch name and shape, in
 * declaration (= state-dict) order. All float values live in ONE allocation, trainable
 * parameters first and buffers after, so that gradients and the optimizer's moments
 * share the layout of the trainable part and the optimizer is a single loop.
 */
#ifndef CONDSEG_PARAMS_H
#define CONDSEG_PARAMS_H

#include <glib.h>
#include <stdint.h>

#include "safetensors.h"   /* cs_st_entry */

typedef enum {
    CS_PARAM,     /* trainable float tensor */
    CS_BUFFER,    /* float buffer (BatchNorm running_mean / running_var) */
    CS_COUNTER,   /* int64 scalar (BatchNorm num_batches_tracked) */
} cs_param_kind;

typedef struct {
    char *name;
    cs_param_kind kind;
    int ndim;              /* 0 for the counters */
    int64_t shape[4];
    int64_t numel;
    int64_t offset;        /* into values (PARAM, BUFFER) or counters (COUNTER) */
    float *data;           /* PARAM, BUFFER */
    int64_t *count;        /* COUNTER */
} cs_param;

typedef struct {
    GPtrArray *list;          /* cs_param *, declaration order */
    GHashTable *by_name;      /* name -> cs_param * */
    float *values;            /* n_trainable parameters, then n_buffer buffer values */
    int64_t n_trainable, n_buffer;
    int64_t *counters;
    int n_counters;
    float *grads;             /* n_trainable gradients (training only), layout of values */
    /* The same in the memory of the backend the network runs on; for the CPU these are
     * values and grads themselves. */
    const struct cs_backend *backend;
    float *dev_values, *dev_grads;
} cs_paramset;

cs_paramset *cs_paramset_new(void);
void cs_paramset_free(cs_paramset *ps);

/* Declaration (before cs_paramset_allocate). */
void cs_declare(cs_paramset *ps, const char *name, cs_param_kind kind, int ndim, int64_t d0,
                int64_t d1, int64_t d2, int64_t d3);
/* Carves the values (zero-filled) and counters out of one allocation each. */
void cs_paramset_allocate(cs_paramset *ps);

/* Training: allocates the gradients (zeroed, on the backend too); cs_paramset_zero_grads
 * clears them. */
void cs_paramset_enable_grads(cs_paramset *ps);
void cs_paramset_zero_grads(cs_paramset *ps);

/* Puts the values on `backend` (NULL: the CPU) and keeps them there; after changes on
 * either side, the sync functions copy them across (nothing to do on the CPU). */
struct cs_backend;
gboolean cs_paramset_to_backend(cs_paramset *ps, const struct cs_backend *backend);
void cs_paramset_sync_to_backend(cs_paramset *ps);    /* host values -> backend */
void cs_paramset_sync_from_backend(cs_paramset *ps);  /* backend values (and grads) -> host */

/* The entry called `name`; a missing name is a bug in the network code and aborts. */
cs_param *cs_param_get(const cs_paramset *ps, const char *name);
cs_param *cs_param_find(const cs_paramset *ps, const char *name);   /* NULL if absent */
int cs_paramset_count(const cs_paramset *ps);
cs_param *cs_paramset_at(const cs_paramset *ps, int index);

/* Fills the store from an open safetensors file: every declared entry must be present
 * with its shape (num_batches_tracked may be absent: 0, as PyTorch does for old
 * checkpoints) and nothing else may be; float entries may be F32, F16 or BF16. All
 * problems are listed in one error naming the file and each tensor. */
struct cs_safetensors;
gboolean cs_paramset_load(cs_paramset *ps, const struct cs_safetensors *file, GError **error);
/* The same, tensors whose names start with foreign_prefix (when not NULL) left alone:
 * a training checkpoint holds the optimiser's beside the network's. */
gboolean cs_paramset_load_except(cs_paramset *ps, const struct cs_safetensors *file,
                                 const char *foreign_prefix, GError **error);
/* Writes every entry (F32, counters I64) with the given metadata (key, value, ..., NULL). */
gboolean cs_paramset_save(const cs_paramset *ps, const char *path,
                          const char *const *metadata, GError **error);
/* The same with n_extra more tensors after the network's, in the same file. */
gboolean cs_paramset_save_with(const cs_paramset *ps, const char *path,
                               const cs_st_entry *extra, int n_extra,
                               const char *const *metadata, GError **error);

/* "64x3x7x7", "scalar" — for messages. */
char *cs_shape_string(int ndim, const int64_t *shape);

/* The index of the first NaN or infinity among v[0..n), or -1. */
int64_t cs_first_non_finite(const float *v, int64_t n);

#endif
