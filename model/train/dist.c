/* dist.c — the ranks of a data-parallel run (dist.h): MPI start-up, the collectives the
 * training loop needs, a watchdog that ends a rank stuck in one, and the gradient sum
 * (MPI on host memory, NCCL on a GPU's). Without MPI (CONDSEG_HAVE_MPI undefined) there
 * is one rank and the collectives return at once. */
#include "dist.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "condseg.h"
#ifdef CONDSEG_HAVE_MPI
#include <mpi.h>
#endif
#ifdef CONDSEG_HAVE_NCCL
#include "dist_nccl.h"
#endif

static int dist_rank = 0, dist_size = 1;
static gboolean mpi_started = FALSE;
static cs_dist_stats stats;

/* ---- the watchdog ------------------------------------------------------------------------ */

/* The collective in progress (its name and when it began, 0: none), read by a thread
 * that ends the process when the wait exceeds the timeout. */
static _Atomic int64_t wait_started_us;
static const char *_Atomic wait_name;
static _Atomic int64_t timeout_us = -1;   /* -1: not read from the environment yet */

void cs_dist_set_timeout(double seconds) {
    atomic_store(&timeout_us, seconds > 0 ? (int64_t)(seconds * 1e6) : 0);
}

static int64_t current_timeout_us(void) {
    int64_t t = atomic_load(&timeout_us);
    if (t >= 0) return t;
    const char *env = g_getenv("CONDSEG_DIST_TIMEOUT");
    const double seconds = env ? g_ascii_strtod(env, NULL) : 600.0;
    cs_dist_set_timeout(seconds);
    return atomic_load(&timeout_us);
}

static gpointer watchdog(gpointer unused) {
    (void)unused;
    for (;;) {
        g_usleep(200 * 1000);
        const int64_t start = atomic_load(&wait_started_us), limit = current_timeout_us();
        if (!start || limit <= 0 || g_get_monotonic_time() - start <= limit) continue;
        /* Another thread is inside MPI: MPI_Abort is not ours to call. Exiting is enough:
         * the launcher sees a rank end without MPI_Finalize and stops the others. */
        fprintf(stderr,
                "condseg: rank %d of %d: no answer from the other ranks for %.0f s (in %s): "
                "a rank died or hangs; stopping (the time limit is $CONDSEG_DIST_TIMEOUT)\n",
                dist_rank, dist_size, limit / 1e6, atomic_load(&wait_name));
        fflush(stderr);
        _exit(3);
    }
    return NULL;
}

static gint64 wait_begin(const char *name, gboolean timed) {
    atomic_store(&wait_name, name);
    const gint64 now = g_get_monotonic_time();
    if (timed) atomic_store(&wait_started_us, now);
    return now;
}

static void wait_end(gint64 began, cs_dist_traffic *kind, size_t bytes) {
    atomic_store(&wait_started_us, 0);
    kind->bytes += bytes;
    kind->calls++;
    kind->seconds += (g_get_monotonic_time() - began) / 1e6;
}

/* ---- start-up ----------------------------------------------------------------------------- */

/* Set by Open MPI's, MPICH's (Hydra) and Slurm's launchers in the processes they start. */
static gboolean started_by_launcher(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                       "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < G_N_ELEMENTS(vars); i++)
        if (g_getenv(vars[i])) return TRUE;
    return FALSE;
}

#ifdef CONDSEG_HAVE_MPI
/* The rank's index among the ranks on its machine: its GPU. */
static int local_rank(void) {
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, dist_rank, MPI_INFO_NULL, &local);
    int r = 0;
    MPI_Comm_rank(local, &r);
    MPI_Comm_free(&local);
    return r;
}
#endif

gboolean cs_dist_init(int *argc, char ***argv, GError **error) {
    if (mpi_started || !started_by_launcher()) return TRUE;
#ifdef CONDSEG_HAVE_MPI
    int provided = 0;
    /* The watchdog thread never calls MPI; the data loader's threads neither. */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        g_set_error(error, CS_ERROR, CS_ERROR_ARG, "MPI_Init failed");
        return FALSE;
    }
    mpi_started = TRUE;
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_size);
    /* Errors in collectives come back as codes: reported and the job aborted by us. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    char device[16];
    g_snprintf(device, sizeof device, "%d", local_rank());
    g_setenv("CONDSEG_CUDA_DEVICE", device, FALSE);
    if (dist_size > 1) g_thread_unref(g_thread_new("cs-dist-watchdog", watchdog, NULL));
    return TRUE;
#else
    (void)argc, (void)argv;
    g_set_error(error, CS_ERROR, CS_ERROR_ARG,
                "started by an MPI launcher, but condseg was built without MPI (install "
                "libopenmpi-dev and build again with -DCONDSEG_MPI=ON)");
    return FALSE;
#endif
}

void cs_dist_finalize(void) {
#ifdef CONDSEG_HAVE_MPI
    if (!mpi_started) return;
#ifdef CONDSEG_HAVE_NCCL
    cs_nccl_close();
#endif
    MPI_Finalize();
    mpi_started = FALSE;
#endif
}

int cs_dist_rank(void) { return dist_rank; }
int cs_dist_size(void) { return dist_size; }

const char *cs_dist_library(void) {
#ifdef CONDSEG_HAVE_MPI
    static char text[MPI_MAX_LIBRARY_VERSION_STRING + 16];
    if (!text[0]) {
        char version[MPI_MAX_LIBRARY_VERSION_STRING] = "";
        int length = 0;
        MPI_Get_library_version(version, &length);
        version[strcspn(version, ",\n")] = '\0';   /* "Open MPI v4.1.4" */
        g_snprintf(text, sizeof text, "MPI (%s)", version);
    }
    return text;
#else
    return "no MPI (built without it)";
#endif
}

void cs_dist_abort(int status, const char *message) {
    if (message) fprintf(stderr, "condseg: rank %d of %d: %s\n", dist_rank, dist_size, message);
    fflush(stderr);
#ifdef CONDSEG_HAVE_MPI
    if (mpi_started && dist_size > 1) MPI_Abort(MPI_COMM_WORLD, status);
#endif
    exit(status);
}

/* ---- collectives --------------------------------------------------------------------------- */

#ifdef CONDSEG_HAVE_MPI
/* A failed collective leaves the ranks out of step: the run cannot go on. */
static void check_mpi(int code, const char *what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = "";
    int length = 0;
    MPI_Error_string(code, text, &length);
    char *message = g_strdup_printf("%s failed: %s", what, text);
    cs_dist_abort(1, message);
}

/* MPI counts are ints: large buffers go in pieces. */
enum { MAX_PIECE = 1 << 28 };

static void allreduce_pieces(void *data, size_t count, MPI_Datatype type, size_t elem,
                             MPI_Op op, const char *what) {
    for (size_t done = 0; done < count; done += MAX_PIECE) {
        const int n = (int)MIN((size_t)MAX_PIECE, count - done);
        check_mpi(MPI_Allreduce(MPI_IN_PLACE, (char *)data + done * elem, n, type, op,
                                MPI_COMM_WORLD), what);
    }
}
#endif

static void reduce_doubles(double *values, int count, gboolean max, const char *what) {
    if (dist_size == 1 || count <= 0) return;
#ifdef CONDSEG_HAVE_MPI
    const gint64 began = wait_begin(what, TRUE);
    allreduce_pieces(values, (size_t)count, MPI_DOUBLE, sizeof(double), max ? MPI_MAX : MPI_SUM,
                     what);
    wait_end(began, &stats.sums, sizeof(double) * (size_t)count);
#else
    (void)values, (void)max, (void)what;
#endif
}

void cs_dist_sum_doubles(double *values, int count) {
    reduce_doubles(values, count, FALSE, "a sum of loss or BatchNorm terms");
}

void cs_dist_max_doubles(double *values, int count) {
    reduce_doubles(values, count, TRUE, "a maximum across ranks");
}

static void broadcast_timed(void *data, size_t bytes, gboolean timed, const char *what) {
    if (dist_size == 1 || bytes == 0) return;
#ifdef CONDSEG_HAVE_MPI
    const gint64 began = wait_begin(what, timed);
    for (size_t done = 0; done < bytes; done += MAX_PIECE) {
        const int n = (int)MIN((size_t)MAX_PIECE, bytes - done);
        check_mpi(MPI_Bcast((char *)data + done, n, MPI_BYTE, 0, MPI_COMM_WORLD), what);
    }
    wait_end(began, &stats.broadcasts, bytes);
#else
    (void)data, (void)timed, (void)what;
#endif
}

void cs_dist_broadcast(void *data, size_t bytes) {
    broadcast_timed(data, bytes, TRUE, "a broadcast from rank 0");
}

char *cs_dist_broadcast_string(const char *text) {
    uint64_t length = dist_rank == 0 ? strlen(text) : 0;
    cs_dist_broadcast(&length, sizeof length);
    char *copy = g_malloc(length + 1);
    if (dist_rank == 0) memcpy(copy, text, length);
    cs_dist_broadcast(copy, length);
    copy[length] = '\0';
    return copy;
}

void cs_dist_broadcast_params(cs_paramset *ps) {
    if (dist_size == 1) return;
    cs_paramset_sync_from_backend(ps);
    cs_dist_broadcast(ps->values, sizeof(float) * (size_t)(ps->n_trainable + ps->n_buffer));
    cs_dist_broadcast(ps->counters, sizeof(int64_t) * (size_t)ps->n_counters);
    cs_paramset_sync_to_backend(ps);
}

void cs_dist_wait_for_rank0(void) {
    unsigned char token = 1;
    broadcast_timed(&token, 1, FALSE, "waiting for rank 0");
}

size_t cs_dist_bucket_bytes(void) {
    const char *env = g_getenv("CONDSEG_DIST_BUCKET_MB");
    const double mb = env ? g_ascii_strtod(env, NULL) : 4.0;
    return mb > 0 ? (size_t)(mb * 1024 * 1024) : 4u << 20;
}

void cs_dist_sum_grads(cs_paramset *ps) {
    if (dist_size == 1) return;
    const size_t n = (size_t)ps->n_trainable, bytes = sizeof(float) * n;
    const cs_backend *be = ps->backend ? ps->backend : &cs_backend_cpu;
    const gint64 began = wait_begin("the gradient sum", TRUE);
#ifdef CONDSEG_HAVE_NCCL
    if (!be->host_memory) {
        be->synchronize();   /* the backward's kernels are done */
        cs_nccl_sum_floats(ps->dev_grads, n);
        wait_end(began, &stats.grads, bytes);
        return;
    }
#endif
#ifdef CONDSEG_HAVE_MPI
    float *grads = ps->grads;
    /* A GPU model without NCCL: through host memory. */
    if (!be->host_memory) be->download(grads, ps->dev_grads, bytes);
    const size_t bucket = MAX(cs_dist_bucket_bytes() / sizeof(float), (size_t)1);
    for (size_t off = 0; off < n; off += bucket)
        allreduce_pieces(grads + off, MIN(bucket, n - off), MPI_FLOAT, sizeof(float), MPI_SUM,
                         "the gradient sum");
    if (!be->host_memory) be->upload(ps->dev_grads, grads, bytes);
#endif
    wait_end(began, &stats.grads, bytes);
}

gboolean cs_dist_replicas_agree(cs_paramset *ps) {
    if (dist_size == 1) return TRUE;
    cs_paramset_sync_from_backend(ps);
    const guint32 *bits = (const guint32 *)ps->values;
    guint64 hash = 1469598103934665603ull;   /* FNV-1a over the 32-bit words */
    for (int64_t i = 0; i < ps->n_trainable; i++) hash = (hash ^ bits[i]) * 1099511628211ull;
    /* Two 32-bit halves are exact as doubles: their maxima and minima agree iff all do. */
    double high[2] = {(double)(hash >> 32), -(double)(hash >> 32)},
           low[2] = {(double)(hash & 0xffffffffu), -(double)(hash & 0xffffffffu)};
    cs_dist_max_doubles(high, 2);
    cs_dist_max_doubles(low, 2);
    return high[0] == -high[1] && low[0] == -low[1];
}

static void reducer_sum(double *values, int count, void *user) {
    (void)user;
    cs_dist_sum_doubles(values, count);
}

const cs_reducer *cs_dist_reducer(void) {
    static const cs_reducer reducer = {reducer_sum, NULL};
    return &reducer;
}

void cs_dist_get_stats(cs_dist_stats *out) { *out = stats; }
