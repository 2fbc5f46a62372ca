/* fileio.c — writing a file atomically: a temporary file in the target's directory (so
 * the final rename stays on one file system), flushed and synced, then renamed over the
 * target. Readers never see a partial file; on failure nothing is left behind and an
 * existing file at the target is untouched. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>        /* O_WRONLY, O_CLOEXEC for g_mkstemp_full */
#include <glib/gstdio.h>  /* g_rename, g_unlink */
#include <unistd.h>

#include "condseg.h"

gboolean cs_write_atomically(const char *path, const char *what, cs_content_writer write_content,
                            const void *content, GError **error) {
    char *temp_path = g_strconcat(path, ".XXXXXX", NULL);
    int fd = g_mkstemp_full(temp_path, O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0) {
        int saved = errno;
        g_set_error(error, CS_ERROR, CS_ERROR_IO,
                    "cannot write %s %s: cannot create a temporary file there: %s", what, path,
                    g_strerror(saved));
        g_free(temp_path);
        return FALSE;
    }
    FILE *fp = fdopen(fd, "wb");
    char *reason = NULL;
    gboolean ok;
    if (!fp) {
        reason = g_strdup(g_strerror(errno));
        close(fd);
        ok = FALSE;
    } else {
        errno = 0;
        ok = write_content(fp, content, &reason);
        if (!ok && !reason && errno) reason = g_strdup(g_strerror(errno));
        if (ok && (fflush(fp) != 0 || fsync(fileno(fp)) != 0)) {
            ok = FALSE;
            reason = g_strdup(g_strerror(errno));
        }
        if (fclose(fp) != 0 && ok) {
            ok = FALSE;
            reason = g_strdup(g_strerror(errno));
        }
    }
    if (ok && g_rename(temp_path, path) != 0) {
        ok = FALSE;
        reason = g_strdup(g_strerror(errno));
    }
    if (!ok) {
        g_set_error(error, CS_ERROR, CS_ERROR_IO, "cannot write %s %s: %s", what, path,
                    reason ? reason : "write failed");
        g_unlink(temp_path);
    }
    g_free(reason);
    g_free(temp_path);
    return ok;
}
