/* device.h — inside libcondseg (device.c): the backend behind a device, with GLib errors,
 * and moving a model onto one. The public device selection is condseg.h's
 * cs_model_set_device; the backends themselves are kernels/ (backend.h, backend_cuda.h). */
#ifndef CONDSEG_DEVICE_H
#define CONDSEG_DEVICE_H

#include <glib.h>

#include "backend.h"
#include "condseg.h"

/* The CUDA backend, or NULL with a CS_ERROR_DEVICE error saying why (no driver, no GPU,
 * or condseg built without CUDA). */
const cs_backend *cs_backend_cuda(GError **error);
/* Moves a model's parameters (values, and gradients if enabled) to `backend` (NULL: the
 * CPU) and gives it a fresh execution context there. Before a trainer is made. */
gboolean cs_model_set_backend(cs_model *model, const cs_backend *backend, GError **error);

#endif
