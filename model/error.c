/* error.c — the CS_ERROR GError domain of libcondseg, and the library version. */
#include "condseg.h"

GQuark cs_error_quark(void) { return g_quark_from_static_string("condseg-error-quark"); }

const char *cs_version(void) { return CONDSEG_VERSION; }
