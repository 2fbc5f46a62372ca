/* condseg.h — the public API of libcondseg: the ConDSeg segmentation network
 * (AAAI 2025) and its stage-1 encoder network, their weights, inference, and the image
 * handling that feeds them exactly as the original pipeline does.
 *
 * The command-line program and the GIMP plug-ins use only this header.
 * Errors are reported through GError in the CS_ERROR domain; messages name the file,
 * tensor or option at fault and what was expected.
 */
#ifndef CONDSEG_H
#define CONDSEG_H

#include <glib.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------
 * Errors */

#define CS_ERROR (cs_error_quark())
GQuark cs_error_quark(void);

typedef enum {
    CS_ERROR_IO,       /* a file is missing, unreadable or unwritable */
    CS_ERROR_FORMAT,   /* a file is not what it should be (corrupt, truncated, wrong format) */
    CS_ERROR_TENSOR,   /* a tensor is missing, unexpected or has the wrong shape or dtype */
    CS_ERROR_ARG,      /* a bad argument, option value or input size */
    CS_ERROR_DEVICE,   /* the requested compute device is not available */
    CS_ERROR_MEMORY,   /* host or GPU memory ran out (the model stays usable) */
} cs_error_code;

/* ---------------------------------------------------------------------------------
 * Images: 8-bit, interleaved, rows packed (stride = width * channels). */

typedef struct {
    int width, height;
    int channels;      /* 3: B,G,R order (what OpenCV's imread gives); 1: gray */
    uint8_t *data;
} cs_image;

cs_image *cs_image_new(int width, int height, int channels);      /* zero-filled */
void cs_image_free(cs_image *image);

/* Decodes JPEG, PNG, BMP or TIFF (no other format) the way cv2.imread(path,
 * IMREAD_COLOR) does: 3 channels, BGR, alpha dropped, EXIF orientation applied. Before
 * any pixel is decoded the header is read and refused when the format is another, the
 * size is above 2^26 pixels (8192x8192) or 32768 a side, or a JPEG is truncated (no end
 * marker). */
cs_image *cs_image_load_bgr(const char *path, GError **error);
/* Those checks alone: the size from the header (before EXIF orientation), nothing
 * decoded. */
gboolean cs_image_read_size(const char *path, int *width, int *height, GError **error);
/* As cv2.imread(path, IMREAD_GRAYSCALE): 1 channel. For JPEG the luma is decoded
 * directly (as libjpeg does for OpenCV); other formats use OpenCV's RGB->gray weights. */
cs_image *cs_image_load_gray(const char *path, GError **error);

/* Writes a 1-channel (gray) or 3-channel (BGR) image as PNG, atomically (temporary
 * file + rename): on failure nothing is left at `path`. */
gboolean cs_image_save_png(const cs_image *image, const char *path, GError **error);

/* cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR) on uint8, bit-exact with
 * OpenCV 4.x (8-bit fixed point, no anti-aliasing). Channels are independent. */
void cs_resize_linear_u8(const uint8_t *src, int src_w, int src_h, uint8_t *dst, int dst_w,
                         int dst_h, int channels);
/* Half-pixel bilinear resize of one float32 plane (cv2 INTER_LINEAR on CV_32F). */
void cs_resize_linear_f32(const float *src, int src_w, int src_h, float *dst, int dst_w,
                          int dst_h);

/* Writes a float32 NumPy .npy array (C order), atomically. */
gboolean cs_write_npy_f32(const char *path, const float *data, int ndim, const int64_t *shape,
                          GError **error);

/* ---------------------------------------------------------------------------------
 * Segmentation metrics (spec §7): per image, P = prediction > 0.5, G = target > 0.5. */

typedef struct {
    double jaccard;     /* IoU; "mIoU" when averaged over images */
    double dice;        /* "mDSC", "F1" */
    double recall, precision, accuracy, f2;
} cs_metrics;
/* Empty masks and predictions: a ratio 0/0 is worth 1 (model/train/metrics.c lists the cases).
 * A frame whose mask is empty is a false alarm when the prediction marks more than this
 * share of it. */
#define CS_FALSE_ALARM_AREA 0.01

/* ---------------------------------------------------------------------------------
 * The networks */

typedef enum {
    CS_ARCH_CONDSEG = 0,   /* the full network: outputs mask, fg, bg, uncertainty */
    CS_ARCH_STAGE1 = 1,    /* the stage-1 (consistency reinforcement) network: one output */
} cs_arch;

/* Output selection for inference, and the order of the outputs when several are asked. */
enum {
    CS_OUT_MASK = 1u << 0,   /* the segmentation (stage 1: its only output) */
    CS_OUT_FG = 1u << 1,     /* auxiliary foreground map */
    CS_OUT_BG = 1u << 2,     /* auxiliary background map */
    CS_OUT_UC = 1u << 3,     /* uncertainty map (SID's third branch) */
    CS_OUT_ALL = 0xfu,
};

/* The resolution the original pipeline trains and evaluates at. Weights trained at another
 * size record it (metadata condseg.input_size), and cs_model_input_size() gives it. */
#define CS_INPUT_SIZE 256

typedef struct cs_model cs_model;

typedef struct {
    cs_arch arch;
    const char *preset;          /* "condseg-r50" for the paper's configuration */
    int n_tensors;               /* state-dict entries, buffers included */
    int64_t n_parameters;        /* trainable values */
    int64_t n_buffer_values;     /* BatchNorm running statistics and counters */
    int input_size;              /* side of the network input the weights were trained at */
} cs_model_info;

/* The default weights file, or NULL when none is installed (g_free the result). Looked up
 * in order: $CONDSEG_WEIGHTS; share/condseg/condseg-default.safetensors under the
 * installation prefix; models/ of the source tree the program was built from. */
char *cs_default_weights_path(void);

/* Loads weights stored with the PyTorch state-dict names (stage-1 or full network,
 * recognised from the names). Every missing, unexpected or misshapen tensor is reported. */
cs_model *cs_model_load(const char *path, GError **error);
/* A network with PyTorch's default initialisation, seeded. */
cs_model *cs_model_new(cs_arch arch, const char *preset, uint64_t seed, GError **error);
gboolean cs_model_save(const cs_model *model, const char *path, GError **error);
void cs_model_free(cs_model *model);
void cs_model_get_info(const cs_model *model, cs_model_info *info);

/* Inference (BatchNorm in eval mode) on a batch of preprocessed images:
 * input is batch x 3 x height x width, BGR in [0, 1]; height and width multiples of 16.
 * For each output bit set in `outputs`, in the order mask, fg, bg, uc, the next pointer of
 * `out` receives batch x height x width probabilities. Only what the requested outputs
 * need is computed. */
gboolean cs_model_forward(cs_model *model, const float *input, int batch, int height,
                          int width, unsigned outputs, float *const *out, GError **error);

/* The side of the network input these weights expect (256 unless trained otherwise). */
int cs_model_input_size(const cs_model *model);

/* The whole original preprocessing of one image (cv2-exact resize to the input size
 * S x S, /255) followed by inference. `prob` receives one S x S plane per requested
 * output, S = cs_model_input_size(). */
gboolean cs_model_predict_image(cs_model *model, const cs_image *bgr, unsigned outputs,
                                float *prob, GError **error);

/* Test-time augmentation (TTA): with a set of mirrored views, cs_model_forward (and so
 * cs_model_predict_image and cs_evaluate) runs the network on the input and on each view,
 * mirrors each view's outputs back and returns the mean of the outputs, all four of them
 * alike. 0 (the default) runs the network once. */
enum {
    CS_TTA_HFLIP = 1u << 0,    /* mirrored left-right */
    CS_TTA_VFLIP = 1u << 1,    /* mirrored top-bottom */
    CS_TTA_HVFLIP = 1u << 2,   /* both (a half turn) */
    CS_TTA_ALL = 0x7u,
};
/* The views `condseg predict --tta` and the plug-ins' TTA use, chosen by measurement on
 * Kvasir-SEG val (README, Test-time augmentation). */
#define CS_TTA_DEFAULT CS_TTA_HVFLIP
void cs_model_set_tta(cs_model *model, unsigned flips);
unsigned cs_model_tta(const cs_model *model);
/* How many network runs a TTA set takes: 1 + the number of views in it. */
int cs_tta_views(unsigned flips);

/* The uncertainty condseg shows users: the binary entropy of the mask probability, in bits,
 *   u = -(p log2 p + (1 - p) log2(1 - p)),  u in [0, 1],
 * 0 where the network is sure (p = 0 or 1), 1 where it cannot tell (p = 0.5). With TTA, p
 * is the views' mean, so views that disagree raise it too. Element-wise over n values. */
void cs_prob_to_uncertainty(const float *prob, size_t n, float *uncertainty);

/* The binary mask at the image's resolution: the probability plane resized back with
 * cs_resize_linear_f32, then prob > threshold -> 255 else 0. `mask` is 1-channel and its
 * size is the target size. */
void cs_prob_to_mask(const float *prob, int prob_w, int prob_h, float threshold, cs_image *mask);

/* ---------------------------------------------------------------------------------
 * Training (spec §4-§6): both stages, on a dataset in the original layout
 * (DIR/images/, DIR/masks/, DIR/train.txt, DIR/val.txt). A run directory holds
 * train_log.csv (the original's columns), train.log, best.safetensors (best validation
 * mIoU), last.safetensors and state.safetensors (optimiser and loop state, for --resume).
 * Several datasets: their train splits are mixed into one training set, each val split is
 * validated and logged on its own, and the mean over the splits of their validation loss
 * (the LR plateau) and mIoU (best.safetensors, early stopping) steer the run. */

typedef struct {
    int stage;                  /* 1: consistency reinforcement of the encoder; 2: ConDSeg */
    const char *const *data_dirs; /* NULL-terminated list of dataset folders (one or more) */
    const char *run_dir;
    const char *init_weights;   /* NULL: PyTorch's default initialisation */
    const char *preset;         /* NULL: "condseg-r50" */
    int epochs;                 /* 300 in the original */
    int batch;                  /* 8 (stage 1) and 12 (stage 2) in the original */
    double lr, lr_backbone;     /* 1e-4 and 1e-4 in the original; stage 1 uses lr only */
    uint64_t seed;
    gboolean augment;           /* the spatial (and stage-1 photometric) augmentations */
    long max_steps;             /* > 0: stop after this many optimiser steps, and save */
    int image_size;             /* 256 */
    int workers;                /* data threads (0: a default) */
    int patience_lr;            /* ReduceLROnPlateau patience (30) */
    int patience_stop;          /* early stopping patience (100) */
    /* Corrections of the original's quirks (spec §9); FALSE reproduces the original. */
    gboolean fix_background;    /* y2 = 1 - y1 after augmentation, not the un-augmented one */
    gboolean single_sigmoid;    /* DiceBCE on the probabilities, not on sigmoid(p) */
    const char *device;         /* cs_model_set_device's name: "cpu", "cuda", "auto" (NULL:
                                 * auto); not saved with the run: a resume chooses again */
    const char *precision;      /* cs_model_set_precision's name: "fp32" (NULL) or "bf16";
                                 * saved with the run, kept by a resume that gives NULL */
    /* Under an MPI launcher (model/train/dist.h) each rank trains on its share of every batch;
     * TRUE: BatchNorm normalises with the whole batch's statistics (summed across ranks),
     * FALSE: with each rank's own (the default, as PyTorch DDP). Saved with the run. */
    gboolean sync_bn;
} cs_train_options;

/* Fills the original's settings for `stage`. */
void cs_train_options_defaults(cs_train_options *opt, int stage);

/* One validation split's figures at an epoch's end (several --data folders). */
typedef struct {
    const char *name;           /* the folder's base name */
    double loss;
    cs_metrics metrics;         /* mean of batch means; accuracy and F2 not computed */
    double false_alarm_rate;    /* of its polyp-free images; NaN when it has none */
} cs_train_split;

typedef struct {
    int epoch, epochs;          /* 1-based */
    int batch_index, batches;   /* within the epoch, 1-based */
    long step;                  /* optimiser steps so far */
    double loss, miou;          /* running means of this epoch (training) */
    double seconds;             /* since this session started */
    double eta_seconds;         /* to the end of the epoch */
    gboolean epoch_done;        /* this report closes the epoch: the val_* fields are set */
    double val_loss, val_miou, val_dice;   /* with several splits, their means */
    int n_splits;               /* with several splits (else 0): each one's figures (valid
                                 * during the report only) */
    const cs_train_split *splits;
    double lr;
    const char *message;        /* a notable event ("best mIoU ... saved"), or NULL */
} cs_train_progress;

typedef void (*cs_train_report_fn)(const cs_train_progress *p, void *user_data);

/* Runs (resume: continues the run in opt->run_dir, whose saved options win over opt's
 * except epochs and max_steps) until the last epoch, early stopping, max_steps, or
 * *stop becoming nonzero (checked after every step; the state is saved, as at every
 * epoch's end). A loss that is not finite stops training with an error and leaves the
 * last saved state as it was. */
gboolean cs_train(const cs_train_options *opt, gboolean resume, cs_train_report_fn report,
                  void *user_data, volatile int *stop, GError **error);

/* Evaluation as the original's test.py (spec §6.4, §7): every image of a split at batch
 * 1, metrics per image, averaged. `per_image` (may be NULL) is called with each image's
 * id, metrics and probability map (S x S, S = cs_model_input_size()); `save_masks_dir`
 * (may be NULL) receives each prediction as a PNG mask at the image's resolution. */
typedef void (*cs_eval_image_fn)(const char *id, const cs_metrics *m, const float *prob,
                                 void *user_data);
typedef struct {
    cs_metrics mean;          /* per-image means */
    int n_images;
    int n_empty_masks;        /* frames without a polyp (empty mask) */
    int n_false_alarms;       /* of those, the ones marked over CS_FALSE_ALARM_AREA */
} cs_eval_summary;
gboolean cs_evaluate(cs_model *model, const char *data_dir, const char *split,
                     const char *save_masks_dir, cs_eval_image_fn per_image, void *user_data,
                     cs_eval_summary *summary, GError **error);

/* Progress of a forward pass (0..1), for front ends that show a bar. */
typedef void (*cs_progress_fn)(double fraction, void *user_data);
void cs_model_set_progress(cs_model *model, cs_progress_fn fn, void *user_data);

/* ---------------------------------------------------------------------------------
 * Compute device: the CPU, or an NVIDIA GPU when condseg is built with CUDA
 * (-DCONDSEG_CUDA, model/device.c). A model starts on the CPU. */

/* Moves `model` (its weights, and gradients when training) to `device` and runs it there
 * from now on: "cpu"; "cuda" (an NVIDIA GPU; fails with CS_ERROR_DEVICE and the reason
 * when there is none or condseg was built without CUDA); "auto" or NULL (the GPU when one
 * is usable, else the CPU). Call it before running or training the model. When "auto"
 * picks the CPU, `note` (may be NULL) receives why, e.g. "no usable GPU (no NVIDIA GPU
 * found (cudaGetDeviceCount: ...)): running on the CPU", or in a build without CUDA "no
 * usable GPU (condseg was built without CUDA support): ..." (g_free it); otherwise it is
 * set to NULL. An unknown name fails with CS_ERROR_ARG. ("cuda-emulated",
 * the CUDA backend's code run on the host, exists for tests.) */
gboolean cs_model_set_device(cs_model *model, const char *device, char **note,
                             GError **error);
/* Where the model runs: "cpu" or "cuda". */
const char *cs_model_device(const cs_model *model);
/* The device cs_model_set_device would choose for `device` ("cpu" or "cuda"), with the
 * same errors and note; for front ends that pass the choice on (cs_train_options). */
const char *cs_device_resolve(const char *device, char **note, GError **error);
/* TF32 tensor cores in the GPU's matrix products: faster, about 1e-3 relative error; off
 * by default (CONDSEG_TF32=1 in the environment turns them on). No effect on the CPU. */
void cs_set_tf32(gboolean allow);

/* Arithmetic precision of the convolutions (and Linear layers), which carry nearly all of
 * the work: "fp32" (the default, or NULL) or "bf16": inputs and weights rounded to
 * bfloat16, products accumulated in float32 (AMX / AVX512-BF16 through oneDNN; about 3x
 * faster, results within about 1e-2); BatchNorm, softmax, losses and Adam stay float32.
 * On a CPU without bfloat16 instructions "bf16" runs fp32 and `note` (may be NULL) says
 * why (g_free it; NULL otherwise). The CUDA backend computes in float32 whatever is set.
 * An unknown name fails with CS_ERROR_ARG. Call it before running or training. */
gboolean cs_model_set_precision(cs_model *model, const char *precision, char **note,
                                GError **error);
/* "fp32" or "bf16": what runs (after any fallback). */
const char *cs_model_precision(const cs_model *model);

/* Worker threads for the CPU kernels (0: all cores). */
void cs_set_num_threads(int n);

/* For programs, first thing in main(): sets up the runtime environment condseg runs
 * best in, which the libraries read when they load, by re-executing the program once:
 *  - OpenBLAS falls back to generic SSE3 kernels on x86 CPUs newer than itself (3-4x
 *    slower): OPENBLAS_CORETYPE then names the kernels the CPU supports;
 *  - OpenMP threads that spin long at barriers collapse when other programs share the
 *    cores: GOMP_SPINCOUNT is set to a short spin unless GOMP_SPINCOUNT or
 *    OMP_WAIT_POLICY is set.
 * Values the user set are kept; CONDSEG_BLAS_AUTO=0 turns all of this off; if
 * re-execution fails the program just goes on. */
void cs_select_blas_kernels(char **argv);
/* The OpenBLAS kernel set in use ("SkylakeX", "Haswell", "Prescott", ...). */
const char *cs_blas_kernels(void);

const char *cs_version(void);

#ifdef __cplusplus
}
#endif
#endif
