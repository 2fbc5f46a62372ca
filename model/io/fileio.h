/* fileio.h — atomic file writing shared by the weights, mask and array writers. */
#ifndef CONDSEG_FILEIO_H
#define CONDSEG_FILEIO_H

#include <glib.h>
#include <stdio.h>

/* Writes the content to fp; on failure returns FALSE and sets *reason (g_free'd by the
 * caller) when it knows one. */
typedef gboolean (*cs_content_writer)(FILE *fp, const void *content, char **reason);

/* Writes `path` through a temporary file in its directory renamed over it once complete.
 * `what` names the kind of file in messages ("safetensors file", "PNG image", ...). */
gboolean cs_write_atomically(const char *path, const char *what, cs_content_writer write_content,
                             const void *content, GError **error);

#endif
