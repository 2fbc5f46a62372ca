/* test_safetensors.c — the .safetensors reader and writer: round trips, files exchanged
 * with tools/st_io.py (Python), float16 conversion (exhaustive), one test per kind of
 * corrupt file (each must fail with a message naming the file and the problem), and
 * atomic saving (a failed save leaves nothing behind and an existing file untouched).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>   /* setrlimit: make a write fail half-way */
#include <unistd.h>         /* geteuid */

#include "check.h"
#include "condseg.h"
#include "safetensors.h"

static char *temp_dir;

static char *temp_path(const char *name) { return g_build_filename(temp_dir, name, NULL); }

static int count_entries(const char *dir) {
    GDir *d = g_dir_open(dir, 0, NULL);
    int n = 0;
    while (d && g_dir_read_name(d)) n++;
    if (d) g_dir_close(d);
    return n;
}

/* Runs python with tools/ on its path; returns stdout or NULL (stderr printed). */
static char *run_python(const char *script, const char *arg) {
    const char *source = g_getenv("CONDSEG_SOURCE");
    if (!source) {
        fprintf(stderr, "CONDSEG_SOURCE is not set (run through ctest)\n");
        return NULL;
    }
    char *tools = g_build_filename(source, "tools", NULL);
    char *out = check_run_python(script, tools, arg);
    g_free(tools);
    return out;
}

// ---------------------------------------------------------------------------------
// round trip

static void test_round_trip(void) {
    float weights[6] = {1.5f, -2.25f, 0.f, 3.0e-5f, 1.0e10f, -0.f};
    float halves_src[4] = {1.f, -0.5f, 65504.f, 6.0e-8f};
    uint16_t halves[4];
    cs_f32_to_f16(halves_src, halves, 4);
    uint16_t bf16[2] = {0x3fc0, 0xc040};   /* 1.5, -3 */
    double doubles[3] = {0.1, -1e300, 2.5};
    int64_t counter = 123456789012345;
    uint8_t bytes[5] = {0, 1, 127, 200, 255};
    cs_st_entry entries[] = {
        {"conv.weight", CS_DT_F32, 2, {2, 3}, weights},
        {"half", CS_DT_F16, 1, {4}, halves},
        {"bn.num_batches_tracked", CS_DT_I64, 0, {0}, &counter},
        {"bytes", CS_DT_U8, 1, {5}, bytes},
        {"empty", CS_DT_F32, 2, {0, 3}, NULL},
        {"brain", CS_DT_BF16, 1, {2}, bf16},
        {"double", CS_DT_F64, 1, {3}, doubles},
    };
    const int n = G_N_ELEMENTS(entries);
    const char *metadata[] = {"format", "pt", "note", "h\xc3\xa9llo \"quoted\"", NULL};
    char *path = temp_path("round.safetensors");
    GError *error = NULL;
    CHECK_MSG(cs_st_save(path, entries, n, metadata, &error), "save: %s",
              error ? error->message : "");
    g_clear_error(&error);

    /* the header is padded so that the data starts 8-byte aligned */
    char *raw = NULL;
    gsize raw_len = 0;
    CHECK(g_file_get_contents(path, &raw, &raw_len, NULL));
    guint64 header_len = 0;
    if (raw_len >= 8) memcpy(&header_len, raw, 8);
    CHECK_MSG(header_len % 8 == 0, "header length %" G_GUINT64_FORMAT " is not a multiple of 8",
              header_len);
    g_free(raw);

    cs_safetensors *file = cs_st_open(path, &error);
    CHECK_MSG(file != NULL, "open: %s", error ? error->message : "");
    g_clear_error(&error);
    if (!file) {
        g_free(path);
        return;
    }
    CHECK(strcmp(cs_st_path(file), path) == 0);
    CHECK(cs_st_count(file) == n);
    for (int i = 0; i < n && i < cs_st_count(file); i++) {
        const cs_st_tensor *t = cs_st_get(file, i);
        const cs_st_entry *e = &entries[i];
        CHECK_MSG(strcmp(t->name, e->name) == 0, "tensor %d is %s, expected %s (data order)", i,
                  t->name, e->name);
        CHECK(cs_st_find(file, e->name) == t);
        CHECK(t->dtype == e->dtype && t->ndim == e->ndim);
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            CHECK(t->shape[d] == e->shape[d]);
            numel *= e->shape[d];
        }
        CHECK_MSG(t->numel == numel, "%s: numel %" G_GINT64_FORMAT, t->name, t->numel);
        CHECK(t->nbytes == (size_t)numel * cs_dtype_size(e->dtype));
        CHECK(t->nbytes == 0 || memcmp(t->data, e->data, t->nbytes) == 0);
    }
    CHECK(cs_st_get(file, -1) == NULL && cs_st_get(file, n) == NULL);
    CHECK(cs_st_find(file, "absent") == NULL);
    CHECK(g_strcmp0(cs_st_metadata(file, "format"), "pt") == 0);
    CHECK(g_strcmp0(cs_st_metadata(file, "note"), metadata[3]) == 0);
    CHECK(cs_st_metadata(file, "absent") == NULL);

    float out[6];
    CHECK(cs_st_read_f32(file, cs_st_find(file, "conv.weight"), out, NULL));
    CHECK(memcmp(out, weights, sizeof weights) == 0);
    CHECK(cs_st_read_f32(file, cs_st_find(file, "half"), out, NULL));
    CHECK(out[0] == 1.f && out[1] == -0.5f && out[2] == 65504.f && fabsf(out[3] - 6.0e-8f) < 3e-8f);
    CHECK(cs_st_read_f32(file, cs_st_find(file, "brain"), out, NULL));
    CHECK(out[0] == 1.5f && out[1] == -3.f);
    CHECK(cs_st_read_f32(file, cs_st_find(file, "double"), out, NULL));
    CHECK(out[0] == 0.1f && isinf(out[1]) && out[1] < 0 && out[2] == 2.5f);
    CHECK(cs_st_read_f32(file, cs_st_find(file, "empty"), out, NULL));

    const cs_st_tensor *counter_tensor = cs_st_find(file, "bn.num_batches_tracked");
    CHECK(!cs_st_read_f32(file, counter_tensor, out, &error));
    CHECK_MSG(error && error->code == CS_ERROR_TENSOR &&
                  strstr(error->message, "bn.num_batches_tracked") &&
                  strstr(error->message, "I64") && strstr(error->message, path),
              "reading I64 as float: \"%s\"", error ? error->message : "no error");
    g_clear_error(&error);
    cs_st_close(file);

    /* no tensors at all */
    CHECK(cs_st_save(path, NULL, 0, NULL, NULL));
    file = cs_st_open(path, NULL);
    CHECK(file && cs_st_count(file) == 0);
    cs_st_close(file);

    /* a header listing tensors out of data order: cs_st_get still follows the data */
    cs_st_entry swapped[] = {{"second", CS_DT_U8, 1, {2}, "ab"}, {"first", CS_DT_U8, 1, {1}, "c"}};
    CHECK(cs_st_save(path, swapped, 2, NULL, NULL));
    file = cs_st_open(path, NULL);
    CHECK(file && cs_st_count(file) == 2 && strcmp(cs_st_get(file, 0)->name, "second") == 0);
    cs_st_close(file);
    g_free(path);
}

// ---------------------------------------------------------------------------------
// interoperability with tools/st_io.py

static void test_python_interop(void) {
    char *py_path = temp_path("from_python.safetensors");
    static const char *writer =
        "import sys, numpy as np\n"
        "sys.path.insert(0, sys.argv[1]); import st_io\n"
        "rng = np.random.default_rng(7)\n"
        "special = np.array([0.0, -0.0, 1.0, 65504, 65519.9, 65520, 7e4, 2.0**-24, 2.0**-25,\n"
        "    3 * 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-25, 1e-10, np.inf, -np.inf, np.nan,\n"
        "    1 + 2.0**-11, 1 + 3 * 2.0**-11, 0.1, -1/3], np.float32)\n"
        "x = np.concatenate([special, (rng.standard_normal(4000) * 10.0 **\n"
        "    rng.integers(-9, 6, 4000)).astype(np.float32)])\n"
        "st_io.save_file({'x_f32': x, 'x_f16': x.astype(np.float16),\n"
        "    'x_f64': x.astype(np.float64) * 1.0000001,\n"
        "    'ids': np.arange(6, dtype=np.int64).reshape(2, 3),\n"
        "    'flags': np.array([True, False, True]), 'scalar': np.float32(2.5)},\n"
        "    sys.argv[2], {'source': 'st_io'})\n";
    char *out = run_python(writer, py_path);
    CHECK_MSG(out != NULL, "tools/st_io.py could not write %s", py_path);
    g_free(out);

    GError *error = NULL;
    cs_safetensors *file = cs_st_open(py_path, &error);
    CHECK_MSG(file != NULL, "reading st_io's file: %s", error ? error->message : "");
    g_clear_error(&error);
    if (file) {
        const cs_st_tensor *x32 = cs_st_find(file, "x_f32"), *x16 = cs_st_find(file, "x_f16");
        const cs_st_tensor *x64 = cs_st_find(file, "x_f64"), *ids = cs_st_find(file, "ids");
        const cs_st_tensor *flags = cs_st_find(file, "flags"), *scalar = cs_st_find(file, "scalar");
        CHECK(x32 && x16 && x64 && ids && flags && scalar);
        CHECK(g_strcmp0(cs_st_metadata(file, "source"), "st_io") == 0);
        if (x32 && x16 && x64 && ids && flags && scalar) {
            size_t n = (size_t)x32->numel;
            CHECK(x16->numel == x32->numel && x16->dtype == CS_DT_F16 && x64->dtype == CS_DT_F64);
            float *x = g_new(float, n), *y = g_new(float, n);
            uint16_t *ours = g_new(uint16_t, n), *numpy = g_new(uint16_t, n);
            CHECK(cs_st_read_f32(file, x32, x, NULL));
            memcpy(numpy, x16->data, n * 2);
            cs_f32_to_f16(x, ours, n);
            size_t mismatches = 0;
            for (size_t i = 0; i < n; i++) {
                gboolean both_nan = (numpy[i] & 0x7fff) > 0x7c00 && (ours[i] & 0x7fff) > 0x7c00;
                if (ours[i] != numpy[i] && !both_nan) {
                    if (!mismatches)
                        fprintf(stderr, "f32->f16 of %.9g: ours 0x%04x, numpy 0x%04x\n", x[i],
                                ours[i], numpy[i]);
                    mismatches++;
                }
            }
            CHECK_MSG(mismatches == 0, "%zu of %zu float16 conversions differ from numpy",
                      mismatches, n);
            CHECK(cs_st_read_f32(file, x16, y, NULL));
            size_t wrong = 0;
            for (size_t i = 0; i < n; i++) {
                float want;
                cs_f16_to_f32(&numpy[i], &want, 1);
                if (!(y[i] == want || (isnan(y[i]) && isnan(want)))) wrong++;
            }
            CHECK(wrong == 0);
            CHECK(cs_st_read_f32(file, x64, y, NULL));
            for (size_t i = 0; i < n; i++) {
                double v;
                memcpy(&v, (const char *)x64->data + 8 * i, 8);
                if (!((float)v == y[i] || (isnan(v) && isnan(y[i])))) wrong++;
            }
            CHECK_MSG(wrong == 0, "%zu F64 values converted wrongly", wrong);
            g_free(x);
            g_free(y);
            g_free(ours);
            g_free(numpy);

            int64_t id_values[6];
            CHECK(ids->dtype == CS_DT_I64 && ids->ndim == 2 && ids->shape[0] == 2 &&
                  ids->shape[1] == 3);
            memcpy(id_values, ids->data, sizeof id_values);
            CHECK(id_values[0] == 0 && id_values[5] == 5);
            CHECK(flags->dtype == CS_DT_BOOL && flags->numel == 3 &&
                  memcmp(flags->data, "\1\0\1", 3) == 0);
            /* st_io stores a 0-d array as shape [1] (np.ascontiguousarray makes it 1-d) */
            float scalar_value = 0;
            CHECK(scalar->numel == 1 && scalar->nbytes == 4 &&
                  cs_st_read_f32(file, scalar, &scalar_value, NULL) && scalar_value == 2.5f);
        }
        cs_st_close(file);
    }

    /* and the other way: a file written here, read by st_io */
    char *c_path = temp_path("from_c.safetensors");
    float values[4] = {0.25f, -1.f, 3.5f, 1e-3f};
    int64_t step = 42;
    uint8_t mask[6] = {0, 255, 1, 2, 3, 4};
    cs_st_entry entries[] = {{"a.weight", CS_DT_F32, 2, {2, 2}, values},
                             {"a.step", CS_DT_I64, 0, {0}, &step},
                             {"mask", CS_DT_U8, 3, {1, 2, 3}, mask}};
    const char *metadata[] = {"arch", "condseg", NULL};
    CHECK(cs_st_save(c_path, entries, 3, metadata, NULL));
    static const char *reader =
        "import sys, numpy as np\n"
        "sys.path.insert(0, sys.argv[1]); import st_io\n"
        "t, m = st_io.load_file(sys.argv[2])\n"
        "assert m == {'arch': 'condseg'}, m\n"
        "w = t['a.weight']\n"
        "assert w.dtype == np.float32 and w.tolist() == [[0.25, -1.0], [3.5, np.float32(1e-3)]]\n"
        "assert t['a.step'].shape == () and int(t['a.step']) == 42\n"
        "assert t['mask'].shape == (1, 2, 3)\n"
        "assert t['mask'].ravel().tolist() == [0, 255, 1, 2, 3, 4]\n"
        "print('ok')\n";
    out = run_python(reader, c_path);
    CHECK_MSG(out && strcmp(out, "ok\n") == 0, "st_io could not read back %s", c_path);
    g_free(out);
    g_free(c_path);
    g_free(py_path);
}

// ---------------------------------------------------------------------------------
// float16

static void test_f16_exhaustive(void) {
    /* every half survives half -> float -> half (NaNs stay NaN) */
    size_t wrong = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t in = (uint16_t)h, back;
        float f;
        cs_f16_to_f32(&in, &f, 1);
        cs_f32_to_f16(&f, &back, 1);
        gboolean nan = (h & 0x7fff) > 0x7c00;
        if (nan ? !(isnan(f) && (back & 0x7fff) > 0x7c00) : back != in) wrong++;
    }
    CHECK_MSG(wrong == 0, "%zu halves do not survive a round trip through float", wrong);

    /* between two neighbouring finite halves: below the midpoint rounds down, above rounds
     * up, and the midpoint itself goes to the even one */
    wrong = 0;
    for (uint16_t h = 0; h < 0x7bff; h++) {
        uint16_t next = (uint16_t)(h + 1), got[3];
        float lo, hi;
        cs_f16_to_f32(&h, &lo, 1);
        cs_f16_to_f32(&next, &hi, 1);
        float mid = lo + (hi - lo) / 2;   /* exact: halves have 11 significant bits */
        float probes[3] = {nextafterf(mid, 0), mid, nextafterf(mid, INFINITY)};
        cs_f32_to_f16(probes, got, 3);
        uint16_t even = (h & 1) ? next : h;
        if (got[0] != h || got[1] != even || got[2] != next) wrong++;
        float negative[3] = {-probes[0], -probes[1], -probes[2]};
        cs_f32_to_f16(negative, got, 3);
        if (got[0] != (h | 0x8000) || got[1] != (even | 0x8000) || got[2] != (next | 0x8000))
            wrong++;
    }
    CHECK_MSG(wrong == 0, "%zu float->half roundings are not to nearest-even", wrong);

    float edges[] = {65519.f, 65520.f, 1e9f, INFINITY, -INFINITY, NAN, 1e-8f, 2.9802322e-8f, -0.f};
    uint16_t expected[] = {0x7bff, 0x7c00, 0x7c00, 0x7c00, 0xfc00, 0, 0, 0, 0x8000};
    uint16_t got[G_N_ELEMENTS(edges)];
    cs_f32_to_f16(edges, got, G_N_ELEMENTS(edges));
    for (size_t i = 0; i < G_N_ELEMENTS(edges); i++) {
        if (isnan(edges[i]))
            CHECK_MSG((got[i] & 0x7fff) > 0x7c00, "NaN -> 0x%04x", got[i]);
        else
            CHECK_MSG(got[i] == expected[i], "%g -> 0x%04x, expected 0x%04x", edges[i], got[i],
                      expected[i]);
    }
}

// ---------------------------------------------------------------------------------
// corrupt files

/* Writes [length][header][data]; `length` is the stored header length. */
static void write_raw(const char *path, guint64 length, const char *header, const void *data,
                      size_t data_len) {
    GByteArray *bytes = g_byte_array_new();
    guint64 le = GUINT64_TO_LE(length);
    g_byte_array_append(bytes, (const guint8 *)&le, 8);
    g_byte_array_append(bytes, (const guint8 *)header, (guint)strlen(header));
    if (data_len) g_byte_array_append(bytes, data, (guint)data_len);
    CHECK(g_file_set_contents(path, (const char *)bytes->data, (gssize)bytes->len, NULL));
    g_byte_array_free(bytes, TRUE);
}

static void write_st(const char *path, const char *header, size_t data_len) {
    static const guint8 zeros[64];
    g_assert(data_len <= sizeof zeros);
    write_raw(path, strlen(header), header, zeros, data_len);
}

/* Opening must fail with `code`, a message naming the file and containing `expected`. */
static void expect_open_error(const char *what, const char *path, int code, const char *expected) {
    GError *error = NULL;
    cs_safetensors *file = cs_st_open(path, &error);
    CHECK_MSG(file == NULL, "%s: opened a corrupt file", what);
    cs_st_close(file);
    CHECK_MSG(error && error->domain == CS_ERROR && error->code == code,
              "%s: error code %d, expected %d (%s)", what, error ? error->code : -1, code,
              error ? error->message : "no error");
    CHECK_MSG(error && strstr(error->message, path), "%s: message \"%s\" does not name the file",
              what, error ? error->message : "");
    CHECK_MSG(error && strstr(error->message, expected),
              "%s: message \"%s\" does not say \"%s\"", what, error ? error->message : "",
              expected);
    g_clear_error(&error);
}

/* One tensor entry of a hand-written header. */
#define ENTRY(name, dtype, shape, begin, end)                                 \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" \
    #begin "," #end "]}"

static void test_corrupt_files(void) {
    char *path = temp_path("corrupt.safetensors");

    char *missing = temp_path("missing.safetensors");
    expect_open_error("missing file", missing, CS_ERROR_IO, "missing.safetensors");
    g_free(missing);
    expect_open_error("a directory", temp_dir, CS_ERROR_IO, "cannot read");

    CHECK(g_file_set_contents(path, "\x10\0\0", 3, NULL));
    expect_open_error("3-byte file", path, CS_ERROR_FORMAT, "shorter than the 8-byte");
    CHECK(g_file_set_contents(path, "", 0, NULL));
    expect_open_error("empty file", path, CS_ERROR_FORMAT, "shorter than the 8-byte");

    write_raw(path, 100, "{\"a\":", NULL, 0);
    expect_open_error("truncated header", path, CS_ERROR_FORMAT, "runs past the end");

    write_st(path, "{" ENTRY("w", "F32", "[4]", 0, 16) "}", 8);
    expect_open_error("truncated data", path, CS_ERROR_FORMAT, "truncated");

    static const char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0";
    CHECK(g_file_set_contents(path, png, sizeof png - 1, NULL));
    expect_open_error("a PNG file", path, CS_ERROR_FORMAT, "not a safetensors file");
    guint8 noise[256];
    GRand *rand = g_rand_new_with_seed(3);
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (guint8)g_rand_int_range(rand, 0, 256);
    noise[7] = 0x80;   /* random, but surely a huge length */
    g_rand_free(rand);
    CHECK(g_file_set_contents(path, (const char *)noise, sizeof noise, NULL));
    expect_open_error("random bytes", path, CS_ERROR_FORMAT, "not a safetensors file");

    write_raw(path, G_MAXUINT64, "{}", NULL, 0);
    expect_open_error("absurd header length", path, CS_ERROR_FORMAT, "exceeds");

    /* Corrupt headers, each followed by `data_len` zero bytes: the error must say `expected`. */
    static const struct {
        const char *what, *header;
        size_t data_len;
        const char *expected;
    } corrupt[] = {
        {"invalid JSON", "{\"a\": ", 0, "not valid JSON"},
        {"JSON array header", "[1, 2]  ", 0, "not a JSON object"},
        {"blank header", "        ", 0, "not a JSON object"},
        {"invalid UTF-8", "{\"\xff\xfe\":{}}", 0, "UTF-8"},
        {"unknown dtype", "{" ENTRY("w", "F8", "[4]", 0, 4) "}", 4, "unknown dtype \"F8\""},
        {"shape/bytes mismatch", "{" ENTRY("w", "F32", "[3]", 0, 16) "}", 16, "needs 12 bytes"},
        {"negative dimension", "{" ENTRY("w", "F32", "[-1,4]", 0, 16) "}", 16, "negative"},
        {"float dimension", "{" ENTRY("w", "F32", "[2.0,2]", 0, 16) "}", 16, "not an integer"},
        {"overflowing shape",
         "{" ENTRY("w", "U8", "[4294967296,4294967296,4294967296]", 0, 16) "}", 16,
         "overflow"},
        {"no data_offsets",
         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
         "\"data_offsets\" is missing"},
        {"one data offset",
         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
         "\"data_offsets\" is malformed"},
        {"numeric dtype",
         "{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "\"dtype\" is not a string"},
        {"string shape",
         "{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
         "\"shape\" is not an array"},
        {"entry not an object", "{\"w\": [1, 2]}", 0, "not a JSON object"},
        {"end before begin", "{" ENTRY("w", "F32", "[1]", 4, 0) "}", 4, "begin <= end"},
        {"gap between tensors",
         "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("b", "F32", "[1]", 8, 12) "}", 12,
         "leave a gap"},
        {"first tensor not at 0", "{" ENTRY("a", "F32", "[1]", 4, 8) "}", 8, "expected 0"},
        {"overlapping tensors",
         "{" ENTRY("a", "F32", "[2]", 0, 8) "," ENTRY("b", "F32", "[2]", 4, 12) "}", 12,
         "overlap"},
        {"trailing bytes", "{" ENTRY("a", "F32", "[1]", 0, 4) "}", 8, "4 trailing bytes"},
        {"duplicate names",
         "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("a", "F32", "[1]", 4, 8) "}", 8,
         "tensor name \"a\" appears more than once"},
        {"duplicate key in an entry",
         "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "key \"dtype\" appears more than once"},
        {"metadata value not a string",
         "{\"__metadata__\":{\"k\":1}," ENTRY("a", "U8", "[1]", 0, 1) "}", 1,
         "metadata \"k\" is not a string"},
        {"metadata not an object",
         "{\"__metadata__\":[\"k\"]}", 0,
         "\"__metadata__\" is not a JSON object"},
        {"duplicate metadata key",
         "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0,
         "appears more than once"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(corrupt); i++) {
        write_st(path, corrupt[i].header, corrupt[i].data_len);
        expect_open_error(corrupt[i].what, path, CS_ERROR_FORMAT, corrupt[i].expected);
    }

    /* and a well-formed hand-made file with a zero-size tensor and padding opens */
    write_st(path, "{\"__metadata__\":{\"k\":\"v\"}," ENTRY("e", "F32", "[0]", 0, 0) ","
                   ENTRY("a", "U8", "[2]", 0, 2) "}   ", 2);
    GError *error = NULL;
    cs_safetensors *file = cs_st_open(path, &error);
    CHECK_MSG(file && cs_st_count(file) == 2 && g_strcmp0(cs_st_metadata(file, "k"), "v") == 0,
              "a valid hand-made file: %s", error ? error->message : "");
    g_clear_error(&error);
    cs_st_close(file);
    g_free(path);
}

// ---------------------------------------------------------------------------------
// failed saves

static void expect_save_error(const char *what, const char *path, const cs_st_entry *entries,
                              int n, const char *const *metadata, int code) {
    GError *error = NULL;
    CHECK_MSG(!cs_st_save(path, entries, n, metadata, &error), "%s: save succeeded", what);
    CHECK_MSG(error && error->domain == CS_ERROR && error->code == code &&
                  strstr(error->message, path),
              "%s: error %d \"%s\" (expected code %d naming the file)", what,
              error ? error->code : -1, error ? error->message : "", code);
    g_clear_error(&error);
}

static void test_failed_saves(void) {
    char *dir = temp_path("saves");
    g_mkdir(dir, 0700);
    char *path = g_build_filename(dir, "model.safetensors", NULL);
    float values[1024] = {0};
    cs_st_entry good[] = {{"w", CS_DT_F32, 1, {4}, values}};
    CHECK(cs_st_save(path, good, 1, NULL, NULL));
    char *before = NULL;
    gsize before_len = 0;
    CHECK(g_file_get_contents(path, &before, &before_len, NULL));

    char *in_missing_dir = g_build_filename(dir, "no-such-dir", "model.safetensors", NULL);
    expect_save_error("missing directory", in_missing_dir, good, 1, NULL, CS_ERROR_IO);
    CHECK(!g_file_test(in_missing_dir, G_FILE_TEST_EXISTS));
    g_free(in_missing_dir);

    /* invalid entries are refused before anything is written */
    cs_st_entry duplicate[] = {{"w", CS_DT_F32, 1, {1}, values}, {"w", CS_DT_F32, 1, {1}, values}};
    expect_save_error("duplicate names", path, duplicate, 2, NULL, CS_ERROR_ARG);
    cs_st_entry negative[] = {{"w", CS_DT_F32, 2, {2, -1}, values}};
    expect_save_error("negative dimension", path, negative, 1, NULL, CS_ERROR_ARG);
    cs_st_entry no_data[] = {{"w", CS_DT_F32, 1, {3}, NULL}};
    expect_save_error("no data", path, no_data, 1, NULL, CS_ERROR_ARG);
    cs_st_entry too_many_dims[] = {{"w", CS_DT_F32, 9, {1}, values}};
    expect_save_error("9 dimensions", path, too_many_dims, 1, NULL, CS_ERROR_ARG);
    cs_st_entry reserved[] = {{"__metadata__", CS_DT_F32, 1, {1}, values}};
    expect_save_error("reserved name", path, reserved, 1, NULL, CS_ERROR_ARG);
    const char *bad_utf8[] = {"key", "\xff", NULL};
    expect_save_error("metadata not UTF-8", path, good, 1, bad_utf8, CS_ERROR_ARG);
    const char *repeated_key[] = {"key", "a", "key", "b", NULL};
    expect_save_error("metadata key twice", path, good, 1, repeated_key, CS_ERROR_ARG);

    /* a write that fails half-way (file size limit): the old file stays, no temporary */
    struct rlimit old_limit, small_limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    small_limit = old_limit;
    small_limit.rlim_cur = 1024;
    signal(SIGXFSZ, SIG_IGN);
    cs_st_entry big[] = {{"w", CS_DT_F32, 1, {1024}, values}};
    if (setrlimit(RLIMIT_FSIZE, &small_limit) == 0) {
        expect_save_error("write failing half-way", path, big, 1, NULL, CS_ERROR_IO);
        setrlimit(RLIMIT_FSIZE, &old_limit);
    } else {
        CHECK_MSG(FALSE, "cannot lower RLIMIT_FSIZE to simulate a failing write");
    }

    /* the target is a directory: the final rename fails */
    char *subdir = g_build_filename(dir, "a-directory", NULL);
    g_mkdir(subdir, 0700);
    expect_save_error("target is a directory", subdir, good, 1, NULL, CS_ERROR_IO);
    CHECK(g_file_test(subdir, G_FILE_TEST_IS_DIR) && count_entries(subdir) == 0);

    /* a read-only directory (meaningless as root, who may write anyway) */
    char *readonly = g_build_filename(dir, "read-only", NULL);
    g_mkdir(readonly, 0500);
    char *in_readonly = g_build_filename(readonly, "model.safetensors", NULL);
    if (geteuid() != 0) {
        expect_save_error("read-only directory", in_readonly, good, 1, NULL, CS_ERROR_IO);
        CHECK(count_entries(readonly) == 0);
    } else {
        printf("test_safetensors: running as root, the read-only directory case is not tested\n");
    }
    g_chmod(readonly, 0700);

    char *after = NULL;
    gsize after_len = 0;
    CHECK(g_file_get_contents(path, &after, &after_len, NULL));
    CHECK_MSG(after_len == before_len && memcmp(before, after, before_len) == 0,
              "a failed save changed the existing %s", path);
    /* the folder holds the model, the two sub-folders and nothing else (no temporaries) */
    CHECK_MSG(count_entries(dir) == 3, "%s holds %d entries after failed saves, expected 3", dir,
              count_entries(dir));
    g_free(before);
    g_free(after);
    g_free(in_readonly);
    g_free(readonly);
    g_free(subdir);
    g_free(path);
    g_free(dir);
}

/* Headers that json-glib would choke on (issue 10): 100,000 nested '[' overflowed its
 * recursive parser's stack (SIGSEGV); 2 million values cost hundreds of MB of nodes. A
 * nesting of 64 (the bound) still parses, and strings may hold any brackets. */
static void test_hostile_headers(void) {
    char *path = temp_path("hostile.safetensors");
    GString *h = g_string_new(NULL);
    for (int i = 0; i < 100000; i++) g_string_append_c(h, '[');
    write_raw(path, h->len, h->str, NULL, 0);
    expect_open_error("100,000 nested arrays", path, CS_ERROR_FORMAT, "nests more than 64 levels");

    g_string_assign(h, "{\"__metadata__\":{\"k\":\"");
    for (int i = 0; i < 1000; i++) g_string_append(h, "[{");   /* inside a string: no nesting */
    g_string_append(h, "\"},\"x\":{\"a\":");
    for (int i = 0; i < 62; i++) g_string_append_c(h, '[');
    for (int i = 0; i < 62; i++) g_string_append_c(h, ']');
    g_string_append(h, "}}");
    write_raw(path, h->len, h->str, NULL, 0);
    /* 64 levels parse: the error is the entry's, not the depth's */
    expect_open_error("64 levels", path, CS_ERROR_FORMAT, "\"dtype\" is missing");
    g_string_insert_c(h, h->len - 2 - 62, '[');
    g_string_insert_c(h, h->len - 2, ']');
    write_raw(path, h->len, h->str, NULL, 0);
    expect_open_error("65 levels", path, CS_ERROR_FORMAT, "nests more than 64 levels");

    g_string_assign(h, "[");
    for (int i = 0; i < 1000000; i++) g_string_append(h, "0,");
    g_string_append(h, "0]");
    write_raw(path, h->len, h->str, NULL, 0);
    expect_open_error("a million values", path, CS_ERROR_FORMAT, "more than 1000000 JSON values");
    g_string_free(h, TRUE);
    g_free(path);
}

int main(void) {
    temp_dir = g_dir_make_tmp("test_safetensors-XXXXXX", NULL);
    if (!temp_dir) return 1;
    CHECK(cs_dtype_size(CS_DT_BF16) == 2 && cs_dtype_size(CS_DT_I64) == 8 &&
          strcmp(cs_dtype_name(CS_DT_BOOL), "BOOL") == 0);
    test_round_trip();
    test_python_interop();
    test_f16_exhaustive();
    test_corrupt_files();
    test_hostile_headers();
    test_failed_saves();
    check_remove_tree(temp_dir);
    g_free(temp_dir);
    return check_summary("test_safetensors");
}
