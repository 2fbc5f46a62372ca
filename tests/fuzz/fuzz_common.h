/* fuzz_common.h — what the harnesses share: each input written to a file (the readers
 * take paths), in a private folder under /dev/shm (or $TMPDIR) made once per process. */
#ifndef CONDSEG_FUZZ_COMMON_H
#define CONDSEG_FUZZ_COMMON_H

#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static const char *fuzz_dir(void) {
    static char *dir = NULL;
    if (!dir) {
        /* /dev/shm: a RAM file system, so that a million inputs cost no disk writes */
        const char *base = g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) ? "/dev/shm" : g_get_tmp_dir();
        char *templ = g_build_filename(base, "condseg-fuzz-XXXXXX", NULL);
        dir = g_mkdtemp(templ);
        if (!dir) abort();
    }
    return dir;
}

/* Writes the input to DIR/name and returns that path (owned by the caller). */
static char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
    char *path = g_build_filename(fuzz_dir(), name, NULL);
    FILE *fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0) abort();
    return path;
}

#endif
