/* optim.c — Adam and ReduceLROnPlateau with PyTorch's arithmetic, so that a step here and
 * a step of torch.optim.Adam from the same state agree to float32 rounding. */
#include "optim.h"

#include "backend.h"
#include "net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cs_adam *cs_adam_new(const cs_paramset *ps, double lr_backbone, double lr) {
    cs_adam *opt = g_new0(cs_adam, 1);
    opt->n = ps->n_trainable;
    /* The networks declare the encoder first, so its parameters are one leading range. */
    opt->split = 0;
    gboolean in_encoder = TRUE;
    for (int i = 0; i < cs_paramset_count(ps); i++) {
        const cs_param *p = cs_paramset_at(ps, i);
        if (p->kind != CS_PARAM) continue;
        if (cs_is_encoder_name(p->name)) {
            g_assert(in_encoder && "encoder parameters must come first");
            opt->split = p->offset + p->numel;
        } else {
            in_encoder = FALSE;
        }
    }
    opt->be = ps->backend ? ps->backend : &cs_backend_cpu;
    const size_t bytes = (sizeof(float) * (size_t)(opt->n + 1) + 63) / 64 * 64;
    opt->m = opt->be->alloc(bytes);
    opt->v = opt->be->alloc(bytes);
    if (!opt->m || !opt->v)
        g_error("out of memory on the %s for the optimiser state (%zu bytes)", opt->be->name,
                2 * bytes);
    opt->be->zero(opt->m, bytes);
    opt->be->zero(opt->v, bytes);
    opt->lr[0] = lr_backbone;
    opt->lr[1] = lr;
    opt->beta1 = 0.9, opt->beta2 = 0.999, opt->eps = 1e-8;
    return opt;
}

void cs_adam_free(cs_adam *opt) {
    if (!opt) return;
    opt->be->release(opt->m);
    opt->be->release(opt->v);
    g_free(opt);
}

void cs_adam_step(cs_adam *opt, cs_paramset *ps) {
    opt->step++;
    const double bc1 = 1.0 - pow(opt->beta1, (double)opt->step);
    const double bc2 = 1.0 - pow(opt->beta2, (double)opt->step);
    const int64_t start[2] = {0, opt->split}, end[2] = {opt->split, opt->n};
    for (int group = 0; group < 2; group++) {
        if (end[group] <= start[group]) continue;
        const int64_t s = start[group];
        /* torch.optim.Adam's single-tensor arithmetic (csm_adam). */
        opt->be->adam_update(ps->dev_values + s, opt->m + s, opt->v + s, ps->dev_grads + s,
                             end[group] - s, (float)opt->beta1, (float)opt->beta2,
                             (float)(opt->lr[group] / bc1), (float)sqrt(bc2), (float)opt->eps);
    }
}

void cs_plateau_init(cs_plateau *s, double factor, int patience) {
    s->factor = factor;
    s->patience = patience;
    s->threshold = 1e-4;
    s->eps = 1e-8;
    s->best = INFINITY;
    s->bad_epochs = 0;
}

gboolean cs_plateau_step(cs_plateau *s, double loss, cs_adam *opt) {
    if (loss < s->best * (1.0 - s->threshold)) {
        s->best = loss;
        s->bad_epochs = 0;
    } else {
        s->bad_epochs++;
    }
    if (s->bad_epochs <= s->patience) return FALSE;
    gboolean reduced = FALSE;
    for (int group = 0; group < 2; group++) {
        const double next = opt->lr[group] * s->factor; /* min_lr 0 */
        if (opt->lr[group] - next > s->eps) {
            opt->lr[group] = next;
            reduced = TRUE;
        }
    }
    s->bad_epochs = 0;
    return reduced;
}
