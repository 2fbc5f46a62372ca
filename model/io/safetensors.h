/* safetensors.h — reading and writing .safetensors files (the weights format of condseg).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *     "__metadata__": {"key": "value", ...} }
 * then the tensor bytes, little-endian, offsets relative to the end of the header.
 * The reader validates what the format prescribes: header length bounded and inside the
 * file, nesting depth and value count bounded, valid JSON parsed by json-glib, no duplicate names, known dtypes,
 * dtype size x shape = byte size, offsets contiguous from 0 and ending exactly at the end
 * of the file. Every failure is a GError (domain CS_ERROR) naming the file and the tensor.
 */
#ifndef CONDSEG_SAFETENSORS_H
#define CONDSEG_SAFETENSORS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#define CS_ST_MAX_DIMS 8

typedef enum {
    CS_DT_F64, CS_DT_F32, CS_DT_F16, CS_DT_BF16,
    CS_DT_I64, CS_DT_I32, CS_DT_I16, CS_DT_I8,
    CS_DT_U64, CS_DT_U32, CS_DT_U16, CS_DT_U8,
    CS_DT_BOOL,
} cs_dtype;

size_t cs_dtype_size(cs_dtype dtype);
const char *cs_dtype_name(cs_dtype dtype);          /* "F32", ... as in the file */

/* One tensor of an open file. `data` points into the mapped file: little-endian and not
 * necessarily aligned, so read it with memcpy or through cs_st_read_f32. */
typedef struct {
    const char *name;
    cs_dtype dtype;
    int ndim;                          /* 0 for a scalar */
    int64_t shape[CS_ST_MAX_DIMS];
    int64_t numel;                     /* 1 for a scalar */
    size_t nbytes;
    const void *data;
} cs_st_tensor;

typedef struct cs_safetensors cs_safetensors;

/* Opens, maps and validates `path`. NULL and *error set on any problem. */
cs_safetensors *cs_st_open(const char *path, GError **error);
void cs_st_close(cs_safetensors *file);

const char *cs_st_path(const cs_safetensors *file);
int cs_st_count(const cs_safetensors *file);
const cs_st_tensor *cs_st_get(const cs_safetensors *file, int index);   /* in data order */
const cs_st_tensor *cs_st_find(const cs_safetensors *file, const char *name);
/* A "__metadata__" value, or NULL when the file has no such key. */
const char *cs_st_metadata(const cs_safetensors *file, const char *key);

/* Converts an F32, F16, BF16 or F64 tensor to float32 into dst (numel floats).
 * Any other dtype is an error naming the tensor. */
gboolean cs_st_read_f32(const cs_safetensors *file, const cs_st_tensor *tensor, float *dst,
                        GError **error);

/* IEEE half <-> float, round to nearest even; used to store compact weights. */
void cs_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void cs_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/* Refuses JSON text nesting deeper than 64 levels or holding more than 1,000,000 values,
 * before json-glib (which recurses per level and allocates per value) parses it; the
 * message names `path`. Used for the header and for JSON kept in metadata. */
gboolean cs_json_check_bounds(const char *path, const char *json, gsize length, GError **error);

/* ---- writing ---- */
typedef struct {
    const char *name;
    cs_dtype dtype;
    int ndim;
    int64_t shape[CS_ST_MAX_DIMS];
    const void *data;                  /* numel * cs_dtype_size(dtype) bytes, host order */
} cs_st_entry;

/* Writes the entries (in the given order) and the metadata, given as a NULL-terminated
 * array of key, value strings (may be NULL), to `path` atomically: a temporary file in
 * the same directory, then rename. On failure nothing is left at `path` (an existing
 * file there is untouched). */
gboolean cs_st_save(const char *path, const cs_st_entry *entries, int n_entries,
                    const char *const *metadata, GError **error);

#endif
