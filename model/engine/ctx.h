/* ctx.h — the inside of an execution context, shared by graph.c (memory, scopes, the
 * tape) and ops.c (the operations). Nothing outside those two files includes it. */
#ifndef CONDSEG_CTX_H
#define CONDSEG_CTX_H

#include <glib.h>
#include <setjmp.h>

#include "backend.h"
#include "graph.h"
#include "params.h"

struct cs_ctx {
    const cs_backend *be;         /* where the activations live and the operations run */
    cs_paramset *params;
    gboolean training;            /* BatchNorm on batch statistics, operations recorded */
    gboolean bf16;                /* convolution inputs in bfloat16 (cs_conv_shape.bf16) */
    uint64_t weights_tag;         /* cs_conv_shape.weights_tag of inference runs */
    GPtrArray *live;              /* cs_tensor *, in creation order (scopes index it) */
    GPtrArray *tape;              /* cs_node *, in execution order */
    GTree *free_blocks;           /* block size -> GSList of free blocks */
    GHashTable *block_sizes;      /* block handed out -> its size */
    size_t pool_bytes, pool_peak;   /* held by the pool (in use + kept) */
    size_t in_use, in_use_peak;     /* handed out */
    float *workspace;             /* conv scratch, grown on demand */
    size_t workspace_floats;
    cs_probe_fn probe;
    void *probe_user;
    GHashTable *profile;          /* CONDSEG_PROFILE set: op kind -> time */
    double conv_flops;            /* of the forward convolutions and Linear layers so far */
    /* Out of memory: where cs_ctx_out_of_memory jumps back to (set by CS_CTX_GUARD around
     * a whole run), with its message; NULL: it aborts, as before any guard existed. */
    jmp_buf *oom_jump;
    char oom_message[256];
    /* Synchronised BatchNorm (--sync-bn over ranks): batch statistics and the backward's
     * channel sums summed across the ranks that share the batch; NULL: per rank. */
    const struct cs_reducer *bn_reducer;
};

/* One recorded operation: what its backward pass needs. */
typedef struct cs_node cs_node;
typedef void (*cs_backward_fn)(cs_ctx *ctx, const cs_node *node);

struct cs_node {
    cs_backward_fn backward;
    const char *kind;             /* for the profile */
    cs_tensor *out;
    cs_tensor *in[4];
    int n_in;
    const cs_param *param[2];     /* weight and bias, or BatchNorm gamma and beta */
    float *saved;                 /* g_malloc'd, freed with the tape */
    cs_tensor *saved_tensor;      /* e.g. the attention probabilities */
    int iarg[4];
    float farg;
};

/* In training mode, appends a node for `out` and returns it for the operation to fill;
 * otherwise returns NULL. */
cs_node *cs_tape_record(cs_ctx *ctx, const char *kind, cs_backward_fn backward, cs_tensor *out);
/* The gradient buffer of t (zeroed when first asked for), or NULL when t needs none. */
float *cs_grad_of(cs_ctx *ctx, cs_tensor *t);
/* Where the gradient of trainable parameter p accumulates, and p's values, in the
 * backend's memory. */
float *cs_param_grad(cs_ctx *ctx, const cs_param *p);
float *cs_param_values(const cs_ctx *ctx, const cs_param *p);

float *cs_ctx_workspace(cs_ctx *ctx, size_t floats);

gint64 cs_profile_start(const cs_ctx *ctx);
void cs_profile_end(cs_ctx *ctx, const char *kind, gint64 start, double gflop);

/* Runs `call`, charging its time to `kind` (ctx must be in scope). */
#define PROFILED(kind, call)                        \
    do {                                            \
        gint64 t0_ = cs_profile_start(ctx);         \
        call;                                       \
        cs_profile_end(ctx, kind, t0_, 0.0);        \
    } while (0)

#endif
