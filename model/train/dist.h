/* dist.h — data-parallel training across processes: the ranks started by an MPI launcher
 * (mpirun -np N condseg train ...), one model replica each. Built on MPI when CMake finds
 * it (CONDSEG_MPI, which defines CONDSEG_HAVE_MPI); the gradients of a model on a GPU go
 * through NCCL when the build has CUDA and NCCL too (CONDSEG_HAVE_NCCL). Without MPI, or
 * in a process not started by a launcher, there is one rank and every call is a no-op.
 *
 * Every collective call below must be made by all ranks in the same order. A collective
 * that waits longer than the timeout (cs_dist_set_timeout, $CONDSEG_DIST_TIMEOUT) ends the
 * process with a message naming the wait, so that a vanished or hung peer stops the run
 * rather than freezing it; the launcher then stops the other ranks. */
#ifndef CONDSEG_DIST_H
#define CONDSEG_DIST_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "params.h"

/* A sum across ranks of a few doubles, in place: what the losses (batch-wide Dice and β
 * sums) and synchronised BatchNorm (batch statistics) call when a batch is split over
 * ranks. NULL where nothing is split. */
typedef struct cs_reducer {
    void (*sum)(double *values, int count, void *user);
    void *user;
} cs_reducer;

/* Starts MPI when this process was started by a launcher (argc/argv may be NULL). Fails
 * with CS_ERROR_ARG when it was but condseg was built without MPI. Selects the rank's GPU
 * ($CONDSEG_CUDA_DEVICE = the rank's index on its machine) unless already set. */
gboolean cs_dist_init(int *argc, char ***argv, GError **error);
void cs_dist_finalize(void);
int cs_dist_rank(void);                /* 0 .. size-1; 0 without MPI */
int cs_dist_size(void);                /* 1 without MPI */
/* "MPI (Open MPI v4.1.4)", "no MPI (built without it)", for --version and logs. */
const char *cs_dist_library(void);
/* Ends every rank: the message (may be NULL) on stderr, then MPI_Abort (or exit). */
G_NORETURN void cs_dist_abort(int status, const char *message);

/* Seconds a collective may wait for the other ranks (<= 0: for ever); the default is
 * $CONDSEG_DIST_TIMEOUT or 600. */
void cs_dist_set_timeout(double seconds);

/* Collectives. */
void cs_dist_sum_doubles(double *values, int count);
void cs_dist_max_doubles(double *values, int count);
void cs_dist_broadcast(void *data, size_t bytes);          /* from rank 0 */
/* The same for a NUL-terminated string: rank 0's g_strdup'd on every rank (free it). */
char *cs_dist_broadcast_string(const char *text);
/* Rank 0's parameter values, buffers and counters to every rank (host memory, then the
 * backend's): one initial state for all. */
void cs_dist_broadcast_params(cs_paramset *ps);
/* The gradients summed across ranks, in place, in the backend's memory (NCCL on a GPU),
 * in buckets of cs_dist_bucket_bytes. */
void cs_dist_sum_grads(cs_paramset *ps);
/* Whether every rank holds the same trainable values, bit for bit (a hash compared across
 * ranks): replicas that drift apart would silently train different models. */
gboolean cs_dist_replicas_agree(cs_paramset *ps);
/* A reducer whose sum is cs_dist_sum_doubles. */
const cs_reducer *cs_dist_reducer(void);
/* A waiting point that may last as long as rank 0 needs (its validation, checkpoint):
 * the timeout does not apply. */
void cs_dist_wait_for_rank0(void);

/* What went through the collectives of this process so far, by kind (the gradient sums,
 * the sums of a few doubles, broadcasts from rank 0): bytes handed to them as input (each
 * rank's own payload), calls, and the seconds spent inside them (waits included). */
typedef struct {
    uint64_t bytes;
    long calls;
    double seconds;
} cs_dist_traffic;
typedef struct {
    cs_dist_traffic grads, sums, broadcasts;
} cs_dist_stats;
void cs_dist_get_stats(cs_dist_stats *stats);

/* The gradient bucket (default 4 MiB; $CONDSEG_DIST_BUCKET_MB). */
size_t cs_dist_bucket_bytes(void);

#endif
