/* net.h — the networks inside libcondseg: their configuration (preset), the building
 * blocks shared by the full ConDSeg network and the stage-1 network, and the two
 * networks' declare (the PyTorch __init__: every state-dict entry, in order) and
 * forward functions.
 */
#ifndef CONDSEG_NET_H
#define CONDSEG_NET_H

#include "condseg.h"
#include "graph.h"
#include "params.h"

/* Longest state-dict name (the longest in the paper network has 46 characters). */
#define CS_NAME_MAX 160

/* A preset: the sizes that define a network of the ConDSeg design. */
typedef struct {
    const char *name;
    int stem_channels;       /* layer0 conv output */
    int expansion;           /* 4: torchvision Bottleneck blocks; 1: BasicBlock (ResNet-18/34) */
    int blocks[3];           /* blocks in layer1..layer3 */
    int widths[3];           /* block widths (the output is expansion x width) */
    int dim;                 /* FEM / SID / CDFA / decoder width */
    int sid_hidden;          /* first CBR of each decouple branch */
    int aux_widths[5];       /* auxiliary-head CBR outputs */
    int heads;               /* CDFA attention heads */
    int out_hidden;          /* output block c2 output */
    int stage1_head;         /* stage-1 head width per scale */
} cs_netcfg;

const cs_netcfg *cs_netcfg_find(const char *name);    /* NULL if unknown */
/* The known presets' names, comma-separated (for messages). */
const char *cs_netcfg_names(void);
extern const cs_netcfg cs_preset_condseg_r50;       /* the paper's network */
extern const cs_netcfg cs_preset_condseg_compact;   /* the same design, narrower */

/* Formats a parameter name "prefix.suffix..." into buf (CS_NAME_MAX bytes). */
const char *cs_name(char *buf, const char *prefix, const char *suffix_format, ...)
    G_GNUC_PRINTF(3, 4);

/* ---- building blocks (blocks.c) ---------------------------------------------------- */

/* CBR (spec §2.1): `prefix`.conv.0 (k x k conv, no bias), `prefix`.conv.1 (BatchNorm). */
void cs_declare_conv(cs_paramset *ps, const char *name, int out, int in, int k, int bias);
void cs_declare_bn(cs_paramset *ps, const char *prefix, int channels);
void cs_declare_linear(cs_paramset *ps, const char *prefix, int out, int in);
void cs_declare_cbr(cs_paramset *ps, const char *prefix, int in, int out, int k);
/* "Same" padding for any kernel size and dilation; relu selects CBR or CB. */
cs_tensor *cs_cbr(cs_ctx *ctx, const cs_tensor *x, const char *prefix, int dil, int relu);

void cs_declare_channel_attention(cs_paramset *ps, const char *prefix, int channels);
cs_tensor *cs_channel_attention(cs_ctx *ctx, const cs_tensor *x, const char *prefix);
void cs_declare_spatial_attention(cs_paramset *ps, const char *prefix);
cs_tensor *cs_spatial_attention(cs_ctx *ctx, const cs_tensor *x, const char *prefix);

/* ---- the ResNet trunk (resnet.c), layer0..layer3 ------------------------------------ */

void cs_declare_trunk(cs_paramset *ps, const cs_netcfg *cfg);
/* x1..x4 (spec §3.1 rows 1-5), each probed under its name. */
void cs_trunk_forward(cs_ctx *ctx, const cs_netcfg *cfg, const cs_tensor *image,
                      cs_tensor *features[4]);
/* Channels of x1..x4. */
void cs_trunk_channels(const cs_netcfg *cfg, int channels[4]);
/* Whether a state-dict name belongs to the encoder (layer0..layer3): the original's
 * backbone parameter group, and what stage 1 hands to stage 2. */
gboolean cs_is_encoder_name(const char *name);

/* ---- the networks ------------------------------------------------------------------ */

void cs_condseg_declare(cs_paramset *ps, const cs_netcfg *cfg);
/* outputs: CS_OUT_* bits; out[0..3] receive mask, fg, bg, uc (NULL where not asked). */
void cs_condseg_forward(cs_ctx *ctx, const cs_netcfg *cfg, const cs_tensor *image,
                        unsigned outputs, cs_tensor *out[4], cs_progress_fn progress,
                        void *progress_data);

/* Tests: observe every named module output of the model's next forward passes. */
void cs_model_set_probe(cs_model *model, cs_probe_fn fn, void *user_data);

void cs_stage1_declare(cs_paramset *ps, const cs_netcfg *cfg);
cs_tensor *cs_stage1_forward(cs_ctx *ctx, const cs_netcfg *cfg, const cs_tensor *image);

#endif
