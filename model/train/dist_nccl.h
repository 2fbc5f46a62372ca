/* dist_nccl.h — the NCCL side of dist.c (built with MPI, CUDA and NCCL): one communicator
 * over all ranks, one GPU each, its id handed out by MPI; sums of GPU buffers. */
#ifndef CONDSEG_DIST_NCCL_H
#define CONDSEG_DIST_NCCL_H

#include <stddef.h>

/* The sum across ranks of n floats of GPU memory, in place (the communicator is made on
 * first use, on the GPU the CUDA backend runs on). Failures abort the job with NCCL's
 * message. */
void cs_nccl_sum_floats(float *device_data, size_t n);
/* Frees the communicator (before MPI_Finalize). */
void cs_nccl_close(void);

#endif
