/* safetensors.c — reading (memory-mapped, fully validated) and atomic writing of
 * .safetensors files, and the float16 conversions used for compact weights.
 *
 * The JSON header is parsed and generated with json-glib; the file is mapped with
 * GMappedFile so that a 200 MB weights file costs no copy. Every problem is reported as a
 * GError in the CS_ERROR domain whose message names the file (and the tensor).
 */
#include "safetensors.h"
#include "fileio.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "condseg.h"

/* The tensor bytes are little-endian in the file and read/written as host memory. */
G_STATIC_ASSERT(G_BYTE_ORDER == G_LITTLE_ENDIAN);

/* Same bound as the reference implementation (safetensors' MAX_HEADER_SIZE). */
#define MAX_HEADER_BYTES ((guint64)100000000)
#define METADATA_KEY "__metadata__"
/* json-glib's parser recurses once per nesting level and builds a node per value, so a
 * hostile header could overflow the stack (100,000 nested '[') or ask for gigabytes of
 * nodes (100 MB of "[0,0,..."). A real header nests 3 deep and has about 10 values per
 * tensor: these bounds are far above any network's and far below any harm. */
#define MAX_HEADER_DEPTH 64
#define MAX_HEADER_VALUES 1000000

// ---------------------------------------------------------------------------------
// dtypes

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [CS_DT_F64] = {"F64", 8}, [CS_DT_F32] = {"F32", 4}, [CS_DT_F16] = {"F16", 2},
    [CS_DT_BF16] = {"BF16", 2}, [CS_DT_I64] = {"I64", 8}, [CS_DT_I32] = {"I32", 4},
    [CS_DT_I16] = {"I16", 2}, [CS_DT_I8] = {"I8", 1}, [CS_DT_U64] = {"U64", 8},
    [CS_DT_U32] = {"U32", 4}, [CS_DT_U16] = {"U16", 2}, [CS_DT_U8] = {"U8", 1},
    [CS_DT_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)G_N_ELEMENTS(dtype_table))

static gboolean dtype_is_valid(cs_dtype dtype) { return (int)dtype >= 0 && (int)dtype < N_DTYPES; }

size_t cs_dtype_size(cs_dtype dtype) { return dtype_is_valid(dtype) ? dtype_table[dtype].size : 0; }

const char *cs_dtype_name(cs_dtype dtype) {
    return dtype_is_valid(dtype) ? dtype_table[dtype].name : "(invalid dtype)";
}

static gboolean dtype_from_name(const char *name, cs_dtype *dtype) {
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(dtype_table[i].name, name) == 0) {
            *dtype = (cs_dtype)i;
            return TRUE;
        }
    }
    return FALSE;
}

/* numel and byte size of a shape, FALSE when either overflows. */
static gboolean shape_sizes(const int64_t *shape, int ndim, size_t elem_size, int64_t *numel,
                            size_t *nbytes) {
    guint64 n = 1;
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || !g_uint64_checked_mul(&n, n, (guint64)shape[d])) return FALSE;
    guint64 bytes;
    if (n > (guint64)INT64_MAX || !g_uint64_checked_mul(&bytes, n, elem_size) || bytes > SIZE_MAX)
        return FALSE;
    *numel = (int64_t)n;
    *nbytes = (size_t)bytes;
    return TRUE;
}

// ---------------------------------------------------------------------------------
// float16 / bfloat16

void cs_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], 4);
        uint32_t sign = (bits >> 16) & 0x8000u;
        uint32_t magnitude = bits & 0x7fffffffu;
        uint32_t half;
        if (magnitude >= 0x7f800000u) {
            /* inf stays inf; NaN keeps its top payload bits and stays a (quiet) NaN */
            half = 0x7c00u | (magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0);
        } else if (magnitude >= 0x477ff000u) {
            half = 0x7c00u;   /* >= 65520 rounds to infinity */
        } else if (magnitude < 0x38800000u) {
            /* below 2^-14: a half subnormal, i.e. round(|x| / 2^-24) */
            if (magnitude < 0x33000000u) {
                half = 0;   /* below 2^-25 (2^-25 itself ties to the even 0) */
            } else {
                uint32_t exponent = magnitude >> 23;
                uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
                uint32_t shift = 126 - exponent;   /* 14..24 */
                uint32_t q = mantissa >> shift, rest = mantissa & ((1u << shift) - 1);
                uint32_t halfway = 1u << (shift - 1);
                if (rest > halfway || (rest == halfway && (q & 1))) q++;
                half = q;   /* may carry into the smallest normal, which is still right */
            }
        } else {
            uint32_t q = ((magnitude >> 23) - 112) << 10 | ((magnitude >> 13) & 0x3ffu);
            uint32_t rest = magnitude & 0x1fffu;
            if (rest > 0x1000u || (rest == 0x1000u && (q & 1))) q++;   /* carry is fine */
            half = q;
        }
        dst[i] = (uint16_t)(sign | half);
    }
}

void cs_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = src[i];
        uint32_t sign = (h & 0x8000u) << 16;
        uint32_t exponent = (h >> 10) & 0x1fu;
        uint32_t mantissa = h & 0x3ffu;
        uint32_t bits;
        if (exponent == 0x1f) {
            bits = sign | 0x7f800000u | (mantissa << 13);
        } else if (exponent != 0) {
            bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
        } else if (mantissa == 0) {
            bits = sign;
        } else {
            /* subnormal: normalise the mantissa into a float32 normal */
            uint32_t e = 113;
            while (!(mantissa & 0x400u)) {
                mantissa <<= 1;
                e--;
            }
            bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
        }
        memcpy(&dst[i], &bits, 4);
    }
}

// ---------------------------------------------------------------------------------
// reading

struct cs_safetensors {
    char *path;
    GMappedFile *mapped;
    int n_tensors;
    cs_st_tensor *tensors;   /* sorted by data offset */
    char **names;            /* owned; tensors[i].name points here */
    GHashTable *by_name;     /* name -> cs_st_tensor* */
    GHashTable *metadata;    /* key -> value, both owned */
};

/* Duplicate keys: json-glib keeps only the last of two equal members, so we watch every
 * member as it is parsed and remember the first name seen twice in one object. */
typedef struct {
    GHashTable *names_by_object;   /* JsonObject* (ref held) -> set of member names */
    JsonObject *duplicate_in;      /* ref held */
    char *duplicate_name;
} duplicate_watch;

static void on_object_member(JsonParser *parser, JsonObject *object, const char *name,
                             gpointer user_data) {
    (void)parser;
    duplicate_watch *watch = user_data;
    GHashTable *names = g_hash_table_lookup(watch->names_by_object, object);
    if (!names) {
        names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        /* the ref keeps a replaced object's address from being reused by a later one */
        g_hash_table_insert(watch->names_by_object, json_object_ref(object), names);
    }
    if (!g_hash_table_add(names, g_strdup(name)) && !watch->duplicate_name) {
        watch->duplicate_name = g_strdup(name);
        watch->duplicate_in = json_object_ref(object);
    }
}

static void duplicate_watch_clear(duplicate_watch *watch) {
    g_clear_pointer(&watch->names_by_object, g_hash_table_destroy);
    g_clear_pointer(&watch->duplicate_in, json_object_unref);
    g_clear_pointer(&watch->duplicate_name, g_free);
}

void cs_st_close(cs_safetensors *file) {
    if (!file) return;
    if (file->names)
        for (int i = 0; i < file->n_tensors; i++) g_free(file->names[i]);
    g_free(file->names);
    g_free(file->tensors);
    if (file->by_name) g_hash_table_destroy(file->by_name);
    if (file->metadata) g_hash_table_destroy(file->metadata);
    if (file->mapped) g_mapped_file_unref(file->mapped);
    g_free(file->path);
    g_free(file);
}

/* A tensor being validated, with its offsets kept until the layout check. */
typedef struct {
    cs_st_tensor tensor;
    guint64 begin, end;
} pending_tensor;

static int compare_by_offsets(const void *a, const void *b) {
    const pending_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static gboolean node_is_integer(JsonNode *node) {
    return node && JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64;
}

/* Reads one tensor entry {"dtype", "shape", "data_offsets"} of the header. */
static gboolean parse_tensor_entry(const char *path, const char *name, JsonNode *node,
                                   pending_tensor *out, GError **error) {
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": the header entry is not a JSON object "
                    "(expected {\"dtype\", \"shape\", \"data_offsets\"})", path, name);
        return FALSE;
    }
    JsonObject *entry = json_node_get_object(node);
    JsonNode *dtype_node = json_object_get_member(entry, "dtype");
    JsonNode *shape_node = json_object_get_member(entry, "shape");
    JsonNode *offsets_node = json_object_get_member(entry, "data_offsets");

    if (!dtype_node || !JSON_NODE_HOLDS_VALUE(dtype_node) ||
        json_node_get_value_type(dtype_node) != G_TYPE_STRING) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": \"dtype\" is %s (expected a string such as \"F32\")",
                    path, name, dtype_node ? "not a string" : "missing");
        return FALSE;
    }
    const char *dtype_name = json_node_get_string(dtype_node);
    if (!dtype_from_name(dtype_name, &out->tensor.dtype)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": unknown dtype \"%s\" (expected one of F64, F32, F16, "
                    "BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)", path, name, dtype_name);
        return FALSE;
    }

    if (!shape_node || !JSON_NODE_HOLDS_ARRAY(shape_node)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": \"shape\" is %s (expected an array of integers)", path,
                    name, shape_node ? "not an array" : "missing");
        return FALSE;
    }
    JsonArray *shape = json_node_get_array(shape_node);
    guint ndim = json_array_get_length(shape);
    if (ndim > CS_ST_MAX_DIMS) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": %u dimensions (at most %d are supported)", path, name,
                    ndim, CS_ST_MAX_DIMS);
        return FALSE;
    }
    out->tensor.ndim = (int)ndim;
    for (guint d = 0; d < ndim; d++) {
        JsonNode *dim = json_array_get_element(shape, d);
        if (!node_is_integer(dim) || json_node_get_int(dim) < 0) {
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "%s: tensor \"%s\": shape[%u] is %s (expected an integer >= 0)", path,
                        name, d, node_is_integer(dim) ? "negative" : "not an integer");
            return FALSE;
        }
        out->tensor.shape[d] = json_node_get_int(dim);
    }

    JsonArray *offsets = offsets_node && JSON_NODE_HOLDS_ARRAY(offsets_node)
                             ? json_node_get_array(offsets_node) : NULL;
    if (!offsets || json_array_get_length(offsets) != 2 ||
        !node_is_integer(json_array_get_element(offsets, 0)) ||
        !node_is_integer(json_array_get_element(offsets, 1))) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": \"data_offsets\" is %s (expected [begin, end], two "
                    "integers)", path, name, offsets_node ? "malformed" : "missing");
        return FALSE;
    }
    gint64 begin = json_array_get_int_element(offsets, 0);
    gint64 end = json_array_get_int_element(offsets, 1);
    if (begin < 0 || end < begin) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                    "] (expected 0 <= begin <= end)", path, name, begin, end);
        return FALSE;
    }
    out->begin = (guint64)begin;
    out->end = (guint64)end;

    if (!shape_sizes(out->tensor.shape, out->tensor.ndim, cs_dtype_size(out->tensor.dtype),
                     &out->tensor.numel, &out->tensor.nbytes)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": the shape's size overflows", path, name);
        return FALSE;
    }
    if ((guint64)out->tensor.nbytes != out->end - out->begin) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: tensor \"%s\": %s of %" G_GINT64_FORMAT " elements needs %zu bytes but "
                    "data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] hold %"
                    G_GUINT64_FORMAT, path, name, dtype_name, out->tensor.numel,
                    out->tensor.nbytes, out->begin, out->end, out->end - out->begin);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse_metadata(const char *path, JsonNode *node, GHashTable *metadata,
                               GError **error) {
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: \"" METADATA_KEY "\" is not a JSON object (expected string keys and "
                    "string values)", path);
        return FALSE;
    }
    JsonObject *object = json_node_get_object(node);
    GList *members = json_object_get_members(object);
    gboolean ok = TRUE;
    for (GList *m = members; m && ok; m = m->next) {
        JsonNode *value = json_object_get_member(object, m->data);
        if (!JSON_NODE_HOLDS_VALUE(value) || json_node_get_value_type(value) != G_TYPE_STRING) {
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "%s: metadata \"%s\" is not a string (\"" METADATA_KEY "\" values must "
                        "be strings)", path, (const char *)m->data);
            ok = FALSE;
        } else {
            g_hash_table_insert(metadata, g_strdup(m->data), g_strdup(json_node_get_string(value)));
        }
    }
    g_list_free(members);
    return ok;
}

/* Sorted tensors must tile the data section exactly: from 0, no gap, no overlap, to its end. */
static gboolean check_layout(const char *path, const pending_tensor *tensors, guint n,
                             guint64 data_size, GError **error) {
    guint64 expected_begin = 0;
    for (guint i = 0; i < n; i++) {
        const pending_tensor *t = &tensors[i];
        if (t->begin != expected_begin) {
            if (i == 0)
                g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                            "%s: tensor \"%s\": the first tensor's data begins at %"
                            G_GUINT64_FORMAT " (expected 0: offsets must be contiguous)", path,
                            t->tensor.name, t->begin);
            else
                g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                            "%s: tensor \"%s\": data_offsets [%" G_GUINT64_FORMAT ", %"
                            G_GUINT64_FORMAT "] %s tensor \"%s\" ending at %" G_GUINT64_FORMAT
                            " (expected contiguous offsets)", path, t->tensor.name, t->begin,
                            t->end, t->begin < expected_begin ? "overlap" : "leave a gap after",
                            tensors[i - 1].tensor.name, expected_begin);
            return FALSE;
        }
        if (t->end > data_size) {
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "%s: tensor \"%s\": data ends at byte %" G_GUINT64_FORMAT " of the data "
                        "section but the file holds only %" G_GUINT64_FORMAT " data bytes "
                        "(truncated file?)", path, t->tensor.name, t->end, data_size);
            return FALSE;
        }
        expected_begin = t->end;
    }
    if (expected_begin != data_size) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: %" G_GUINT64_FORMAT " trailing bytes after the last tensor's data "
                    "(the data section must end at the end of the file)", path,
                    data_size - expected_begin);
        return FALSE;
    }
    return TRUE;
}

/* A scan of the brackets and commas outside strings (an unterminated string is left to
 * the parser to report). */
gboolean cs_json_check_bounds(const char *path, const char *header, gsize header_len,
                              GError **error) {
    int depth = 0;
    guint64 values = 1;
    gboolean in_string = FALSE, escaped = FALSE;
    for (gsize i = 0; i < header_len; i++) {
        const char c = header[i];
        if (in_string) {
            if (escaped) escaped = FALSE;
            else if (c == '\\') escaped = TRUE;
            else if (c == '"') in_string = FALSE;
        } else if (c == '"') {
            in_string = TRUE;
        } else if (c == '[' || c == '{') {
            if (++depth > MAX_HEADER_DEPTH) {
                g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                            "%s: the header nests more than %d levels deep (a safetensors "
                            "header nests 3)", path, MAX_HEADER_DEPTH);
                return FALSE;
            }
            values++;
        } else if (c == ']' || c == '}') {
            depth--;
        } else if (c == ',') {
            values++;
        }
        if (values > MAX_HEADER_VALUES) {
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "%s: the header holds more than %d JSON values (expected about 10 "
                        "per tensor)", path, MAX_HEADER_VALUES);
            return FALSE;
        }
    }
    return TRUE;
}

/* Parses and validates the header, filling `file` (tensors in data order). */
static gboolean parse_header(cs_safetensors *file, const char *header, gsize header_len,
                             guint64 data_size, const guint8 *data, GError **error) {
    const char *path = file->path;
    if (!g_utf8_validate(header, (gssize)header_len, NULL)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: the header is not valid UTF-8 (expected a JSON object)", path);
        return FALSE;
    }
    if (!cs_json_check_bounds(path, header, header_len, error)) return FALSE;

    JsonParser *parser = json_parser_new();
    duplicate_watch watch = {
        .names_by_object = g_hash_table_new_full(g_direct_hash, g_direct_equal,
                                                 (GDestroyNotify)json_object_unref,
                                                 (GDestroyNotify)g_hash_table_destroy),
    };
    g_signal_connect(parser, "object-member", G_CALLBACK(on_object_member), &watch);

    gboolean ok = FALSE;
    pending_tensor *pending = NULL;
    guint n = 0; /* tensors; the header bounds it (MAX_HEADER_VALUES) */
    GError *json_error = NULL;
    if (!json_parser_load_from_data(parser, header, (gssize)header_len, &json_error)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT, "%s: the header is not valid JSON: %s",
                    path, json_error->message);
        g_error_free(json_error);
        goto out;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: the header is not a JSON object (expected {\"<tensor name>\": {...}})",
                    path);
        goto out;
    }
    JsonObject *root_object = json_node_get_object(root);
    if (watch.duplicate_name) {
        if (watch.duplicate_in == root_object)
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "%s: tensor name \"%s\" appears more than once in the header", path,
                        watch.duplicate_name);
        else
            g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                        "%s: key \"%s\" appears more than once in one object of the header",
                        path, watch.duplicate_name);
        goto out;
    }

    GList *members = json_object_get_members(root_object);
    pending = g_new0(pending_tensor, g_list_length(members));
    gboolean entries_ok = TRUE;
    for (GList *m = members; m && entries_ok; m = m->next) {
        const char *name = m->data;
        JsonNode *node = json_object_get_member(root_object, name);
        if (strcmp(name, METADATA_KEY) == 0) {
            entries_ok = parse_metadata(path, node, file->metadata, error);
        } else if ((entries_ok = parse_tensor_entry(path, name, node, &pending[n], error))) {
            pending[n].tensor.name = name;   /* valid while the parser lives */
            n++;
        }
    }
    g_list_free(members);
    if (!entries_ok) goto out;

    if (n > 1) qsort(pending, n, sizeof *pending, compare_by_offsets);
    if (!check_layout(path, pending, n, data_size, error)) goto out;

    file->n_tensors = (int)n;
    file->tensors = g_new0(cs_st_tensor, n);
    file->names = g_new0(char *, n);
    for (guint i = 0; i < n; i++) {
        file->names[i] = g_strdup(pending[i].tensor.name);
        file->tensors[i] = pending[i].tensor;
        file->tensors[i].name = file->names[i];
        file->tensors[i].data = data + pending[i].begin;
        g_hash_table_insert(file->by_name, file->names[i], &file->tensors[i]);
    }
    ok = TRUE;
out:
    g_free(pending);
    g_object_unref(parser);
    duplicate_watch_clear(&watch);
    return ok;
}

cs_safetensors *cs_st_open(const char *path, GError **error) {
    g_return_val_if_fail(path != NULL, NULL);
    cs_safetensors *file = g_new0(cs_safetensors, 1);
    file->path = g_strdup(path);
    file->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    file->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

    GError *map_error = NULL;
    file->mapped = g_mapped_file_new(path, FALSE, &map_error);
    if (!file->mapped) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot read safetensors file %s: %s", path,
                    map_error->message);
        g_error_free(map_error);
        cs_st_close(file);
        return NULL;
    }
    const guint8 *bytes = (const guint8 *)g_mapped_file_get_contents(file->mapped);
    guint64 size = g_mapped_file_get_length(file->mapped);
    if (size < 8) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: not a safetensors file: %" G_GUINT64_FORMAT " bytes, shorter than "
                    "the 8-byte header length", path, size);
        cs_st_close(file);
        return NULL;
    }
    guint64 header_len;
    memcpy(&header_len, bytes, 8);
    header_len = GUINT64_FROM_LE(header_len);
    if (header_len > MAX_HEADER_BYTES) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: not a safetensors file: header length %" G_GUINT64_FORMAT
                    " exceeds the %" G_GUINT64_FORMAT "-byte limit", path, header_len,
                    MAX_HEADER_BYTES);
        cs_st_close(file);
        return NULL;
    }
    if (header_len > size - 8) {
        g_set_error(error, CS_ERROR, CS_ERROR_FORMAT,
                    "%s: header length %" G_GUINT64_FORMAT " runs past the end of the file (%"
                    G_GUINT64_FORMAT " bytes; truncated file?)", path, header_len, size);
        cs_st_close(file);
        return NULL;
    }
    if (!parse_header(file, (const char *)bytes + 8, (gsize)header_len, size - 8 - header_len,
                      bytes + 8 + header_len, error)) {
        cs_st_close(file);
        return NULL;
    }
    return file;
}

const char *cs_st_path(const cs_safetensors *file) { return file->path; }

int cs_st_count(const cs_safetensors *file) { return file->n_tensors; }

const cs_st_tensor *cs_st_get(const cs_safetensors *file, int index) {
    return index >= 0 && index < file->n_tensors ? &file->tensors[index] : NULL;
}

const cs_st_tensor *cs_st_find(const cs_safetensors *file, const char *name) {
    return g_hash_table_lookup(file->by_name, name);
}

const char *cs_st_metadata(const cs_safetensors *file, const char *key) {
    return g_hash_table_lookup(file->metadata, key);
}

gboolean cs_st_read_f32(const cs_safetensors *file, const cs_st_tensor *tensor, float *dst,
                        GError **error) {
    const guint8 *src = tensor->data;
    size_t n = (size_t)tensor->numel;
    switch (tensor->dtype) {
    case CS_DT_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        return TRUE;
    case CS_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);   /* the data need not be aligned */
            cs_f16_to_f32(&h, &dst[i], 1);
        }
        return TRUE;
    case CS_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;   /* bfloat16 is float32's top half */
            memcpy(&dst[i], &bits, 4);
        }
        return TRUE;
    case CS_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        }
        return TRUE;
    default:
        g_set_error(error, CS_ERROR, CS_ERROR_TENSOR,
                    "%s: tensor \"%s\" has dtype %s (expected a floating-point dtype: F32, F16, "
                    "BF16 or F64)", file->path, tensor->name, cs_dtype_name(tensor->dtype));
        return FALSE;
    }
}

// ---------------------------------------------------------------------------------
// writing

static gboolean validate_entries(const char *path, const cs_st_entry *entries, int n_entries,
                                 const char *const *metadata, GError **error) {
    if (n_entries < 0 || (n_entries > 0 && !entries)) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "%s: %d entries to write (expected >= 0)",
                    path, n_entries);
        return FALSE;
    }
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (int i = 0; i < n_entries; i++) {
        const cs_st_entry *e = &entries[i];
        const char *name = e->name ? e->name : "(null)";
        int64_t numel;
        size_t nbytes;
        if (!e->name || !*e->name || strcmp(e->name, METADATA_KEY) == 0 ||
            !g_utf8_validate(e->name, -1, NULL)) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "%s: entry %d has an invalid tensor name \"%s\"", path, i, name);
            return FALSE;
        }
        if (!g_hash_table_add(seen, (gpointer)e->name)) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "%s: tensor name \"%s\" is given more than once", path, name);
            return FALSE;
        }
        if (!dtype_is_valid(e->dtype)) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG, "%s: tensor \"%s\": invalid dtype %d",
                        path, name, (int)e->dtype);
            return FALSE;
        }
        if (e->ndim < 0 || e->ndim > CS_ST_MAX_DIMS) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "%s: tensor \"%s\": %d dimensions (expected 0..%d)", path, name, e->ndim,
                        CS_ST_MAX_DIMS);
            return FALSE;
        }
        if (!shape_sizes(e->shape, e->ndim, cs_dtype_size(e->dtype), &numel, &nbytes)) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "%s: tensor \"%s\": a negative dimension or a size that overflows", path,
                        name);
            return FALSE;
        }
        if (!e->data && nbytes > 0) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG, "%s: tensor \"%s\": no data", path, name);
            return FALSE;
        }
    }
    g_autoptr(GHashTable) seen_keys = g_hash_table_new(g_str_hash, g_str_equal);
    for (int i = 0; metadata && metadata[i]; i += 2) {
        if (!metadata[i + 1] || !g_utf8_validate(metadata[i], -1, NULL) ||
            !g_utf8_validate(metadata[i + 1], -1, NULL)) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "%s: metadata \"%s\" has no value or is not UTF-8", path, metadata[i]);
            return FALSE;
        }
        if (!g_hash_table_add(seen_keys, (gpointer)metadata[i])) {
            g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                        "%s: metadata \"%s\" is given more than once", path, metadata[i]);
            return FALSE;
        }
    }
    return TRUE;
}

/* The JSON header, padded with spaces to a multiple of 8 so that the data is aligned. */
static char *build_header(const cs_st_entry *entries, int n_entries, const char *const *metadata,
                          gsize *length) {
    JsonBuilder *builder = json_builder_new();
    json_builder_begin_object(builder);
    if (metadata && metadata[0]) {
        json_builder_set_member_name(builder, METADATA_KEY);
        json_builder_begin_object(builder);
        for (int i = 0; metadata[i]; i += 2) {
            json_builder_set_member_name(builder, metadata[i]);
            json_builder_add_string_value(builder, metadata[i + 1]);
        }
        json_builder_end_object(builder);
    }
    guint64 offset = 0;
    for (int i = 0; i < n_entries; i++) {
        const cs_st_entry *e = &entries[i];
        int64_t numel = 0;
        size_t nbytes = 0;
        /* Validated by the caller already. */
        (void)shape_sizes(e->shape, e->ndim, cs_dtype_size(e->dtype), &numel, &nbytes);
        json_builder_set_member_name(builder, e->name);
        json_builder_begin_object(builder);
        json_builder_set_member_name(builder, "dtype");
        json_builder_add_string_value(builder, cs_dtype_name(e->dtype));
        json_builder_set_member_name(builder, "shape");
        json_builder_begin_array(builder);
        for (int d = 0; d < e->ndim; d++) json_builder_add_int_value(builder, e->shape[d]);
        json_builder_end_array(builder);
        json_builder_set_member_name(builder, "data_offsets");
        json_builder_begin_array(builder);
        json_builder_add_int_value(builder, (gint64)offset);
        json_builder_add_int_value(builder, (gint64)(offset + nbytes));
        json_builder_end_array(builder);
        json_builder_end_object(builder);
        offset += nbytes;
    }
    json_builder_end_object(builder);

    JsonGenerator *generator = json_generator_new();
    JsonNode *root = json_builder_get_root(builder);
    json_generator_set_root(generator, root);
    gsize json_len;
    char *json = json_generator_to_data(generator, &json_len);
    json_node_unref(root);
    g_object_unref(generator);
    g_object_unref(builder);

    gsize padded = (json_len + 7) / 8 * 8;
    char *header = g_realloc(json, padded + 1);
    memset(header + json_len, ' ', padded - json_len);
    header[padded] = '\0';
    *length = padded;
    return header;
}

typedef struct {
    const char *header;
    gsize header_len;
    const cs_st_entry *entries;
    int n_entries;
} st_content;

/* The 8-byte header length, the header, then every tensor's bytes in order. */
static gboolean write_st_content(FILE *fp, const void *content, char **reason) {
    (void)reason; /* errno tells */
    const st_content *c = content;
    guint64 length_le = GUINT64_TO_LE((guint64)c->header_len);
    gboolean ok = fwrite(&length_le, 8, 1, fp) == 1 &&
                  fwrite(c->header, 1, c->header_len, fp) == c->header_len;
    for (int i = 0; ok && i < c->n_entries; i++) {
        int64_t numel = 0;
        size_t nbytes = 0;
        /* Validated by the caller already. */
        (void)shape_sizes(c->entries[i].shape, c->entries[i].ndim,
                          cs_dtype_size(c->entries[i].dtype), &numel, &nbytes);
        /* An empty tensor may come with no data pointer at all. */
        ok = nbytes == 0 || fwrite(c->entries[i].data, 1, nbytes, fp) == nbytes;
    }
    return ok;
}

gboolean cs_st_save(const char *path, const cs_st_entry *entries, int n_entries,
                    const char *const *metadata, GError **error) {
    g_return_val_if_fail(path != NULL, FALSE);
    if (!validate_entries(path, entries, n_entries, metadata, error)) return FALSE;

    gsize header_len;
    char *header = build_header(entries, n_entries, metadata, &header_len);

    const st_content content = {header, header_len, entries, n_entries};
    gboolean ok = cs_write_atomically(path, "safetensors file", write_st_content, &content, error);
    g_free(header);
    return ok;
}
