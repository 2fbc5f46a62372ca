/* device.c — where a model runs: the CPU backend, or the CUDA backend (kernels/
 * backend_cuda.h) when condseg is built with CUDA; device names ("cpu", "cuda", "auto"),
 * the fallback of "auto", and moving a model's parameters and context across. */
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "condseg.h"
#include "device.h"
#include "graph.h"
#include "model_internal.h"
#include "params.h"

const cs_backend *cs_backend_cuda(GError **error) {
#ifdef CONDSEG_HAVE_CUDA
    char reason[512];
    const cs_backend *be = cs_cuda_backend_open(reason, sizeof reason);
    if (!be) g_set_error(error, CS_ERROR, CS_ERROR_DEVICE, "%s", reason);
    return be;
#else
    g_set_error(error, CS_ERROR, CS_ERROR_DEVICE,
                "condseg was built without CUDA support; rebuild with -DCONDSEG_CUDA=ON");
    return NULL;
#endif
}

/* The backend for a device name; for "auto" the CPU when no GPU is usable, with a note
 * saying why (in a build without CUDA, that: the README promises an explicit "auto" says
 * why it fell back, and a user may not know which build they have). */
static const cs_backend *backend_named(const char *device, char **note, GError **error) {
    if (note) *note = NULL;
    if (!device || strcmp(device, "auto") == 0) {
#ifdef CONDSEG_HAVE_CUDA
        GError *why = NULL;
        const cs_backend *be = cs_backend_cuda(&why);
        if (be) return be;
        if (note) *note = g_strdup_printf("no usable GPU (%s): running on the CPU", why->message);
        g_error_free(why);
#else
        if (note)
            *note = g_strdup("no usable GPU (condseg was built without CUDA support): "
                             "running on the CPU");
#endif
        return &cs_backend_cpu;
    }
    if (strcmp(device, "cpu") == 0) return &cs_backend_cpu;
    if (strcmp(device, "cuda") == 0) return cs_backend_cuda(error);
    if (strcmp(device, "cuda-emulated") == 0) {
#ifdef CONDSEG_HAVE_CUDA
        return cs_cuda_emulated_backend();
#else
        return cs_backend_cuda(error);
#endif
    }
    g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                "unknown device '%s' (expected cpu, cuda or auto)", device);
    return NULL;
}

const char *cs_device_resolve(const char *device, char **note, GError **error) {
    const cs_backend *be = backend_named(device, note, error);
    return be ? be->name : NULL;
}

/* Bytes of a parameter mirror of n floats, as params.c allocates them. */
static size_t mirror_bytes(int64_t n) { return (sizeof(float) * (size_t)(n + 1) + 63) / 64 * 64; }

static void drop_mirror(cs_paramset *ps) {
    const cs_backend *be = ps->backend;
    if (be && !be->host_memory) {
        if (ps->dev_values) be->release(ps->dev_values);
        if (ps->dev_grads) be->release(ps->dev_grads);
    }
    ps->backend = NULL;
    ps->dev_values = ps->dev_grads = NULL;
}

gboolean cs_model_set_backend(cs_model *model, const cs_backend *backend, GError **error) {
    if (!backend) backend = &cs_backend_cpu;
    cs_paramset *ps = model->params;
    const cs_backend *current = ps->backend ? ps->backend : &cs_backend_cpu;
    if (current == backend) return TRUE;
    /* The host copy becomes the current one, then the old mirror goes. */
    cs_paramset_sync_from_backend(ps);
    drop_mirror(ps);
    gboolean ok = cs_paramset_to_backend(ps, backend);
    if (ok && ps->grads && !backend->host_memory) {
        /* Gradients already enabled: they move too (cs_paramset_enable_grads made them
         * only where the parameters were then). */
        ps->dev_grads = backend->alloc(mirror_bytes(ps->n_trainable));
        if (ps->dev_grads)
            backend->upload(ps->dev_grads, ps->grads, sizeof(float) * (size_t)ps->n_trainable);
        else ok = FALSE;
    }
    if (!ok) {
        drop_mirror(ps);
        cs_paramset_to_backend(ps, &cs_backend_cpu);
        g_set_error(error, CS_ERROR, CS_ERROR_DEVICE,
                    "out of memory on the %s for the network's %" G_GINT64_FORMAT
                    " parameters", backend->name, ps->n_trainable + ps->n_buffer);
        backend = &cs_backend_cpu;
    }
    /* A context runs on one backend: a fresh one (its pool fills again on first use). */
    cs_ctx_free(model->ctx);
    model->ctx = cs_ctx_new(ps, backend);
    cs_ctx_set_bf16(model->ctx, model->bf16);
    cs_model_weights_changed(model);
    return ok;
}

gboolean cs_model_set_device(cs_model *model, const char *device, char **note,
                             GError **error) {
    char *why = NULL;
    const cs_backend *be = backend_named(device, &why, error);
    if (!be) return FALSE;
    GError *local = NULL;
    if (!cs_model_set_backend(model, be, &local)) {
        if (device && strcmp(device, "auto") != 0) {
            g_propagate_error(error, local);
            g_free(why);
            return FALSE;
        }
        /* "auto": a GPU too small for the model still leaves the CPU. */
        g_free(why);
        why = g_strdup_printf("%s: running on the CPU", local->message);
        g_error_free(local);
    }
    if (note) *note = why;
    else g_free(why);
    return TRUE;
}

const char *cs_model_device(const cs_model *model) {
    const cs_backend *be = model->params->backend;
    return be ? be->name : "cpu";
}

void cs_set_tf32(gboolean allow) {
#ifdef CONDSEG_HAVE_CUDA
    cs_cuda_set_tf32(allow ? 1 : 0);
#else
    (void)allow;
#endif
}
