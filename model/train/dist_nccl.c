/* dist_nccl.c — gradient sums between GPUs through NCCL (dist_nccl.h): MPI only starts it
 * (rank 0's ncclUniqueId broadcast to all), then ncclAllReduce runs on the GPU buffers,
 * on a stream of its own that the caller's work has finished before. */
#include "dist_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include "dist.h"

static ncclComm_t comm;
static cudaStream_t stream;
static int comm_ready;

static void check_nccl(ncclResult_t result, const char *what) {
    if (result == ncclSuccess) return;
    char *message = g_strdup_printf("%s failed: %s", what, ncclGetErrorString(result));
    cs_dist_abort(1, message);
}

static void check_cuda(cudaError_t result, const char *what) {
    if (result == cudaSuccess) return;
    char *message = g_strdup_printf("%s failed: %s", what, cudaGetErrorString(result));
    cs_dist_abort(1, message);
}

/* Made on first use: by then the CUDA backend has selected the rank's GPU. */
static void open_comm(void) {
    ncclUniqueId id;
    if (cs_dist_rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    cs_dist_broadcast(&id, sizeof id);
    check_nccl(ncclCommInitRank(&comm, cs_dist_size(), id, cs_dist_rank()), "ncclCommInitRank");
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    comm_ready = 1;
}

void cs_nccl_sum_floats(float *device_data, size_t n) {
    if (!comm_ready) open_comm();
    check_nccl(ncclAllReduce(device_data, device_data, n, ncclFloat, ncclSum, comm, stream),
               "ncclAllReduce of the gradients");
    check_cuda(cudaStreamSynchronize(stream), "waiting for ncclAllReduce");
}

void cs_nccl_close(void) {
    if (!comm_ready) return;
    ncclCommDestroy(comm);
    cudaStreamDestroy(stream);
    comm_ready = 0;
}
