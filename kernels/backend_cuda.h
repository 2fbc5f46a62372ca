/* backend_cuda.h — the CUDA backend (backend_cuda.cu: CUDA kernels + cuBLAS on one
 * stream) and its host emulation (backend_cuda_emulated.cu: the same operation code with
 * the GPU's threads run as host loops, for testing without a GPU). Built when CMake finds
 * nvcc (CONDSEG_CUDA), which defines CONDSEG_HAVE_CUDA.
 *
 * The library-facing entry points with GError (cs_backend_cuda, cs_model_set_backend)
 * are libcondseg's (model/device.h); the public device selection is condseg.h's
 * cs_model_set_device.
 */
#ifndef CONDSEG_BACKEND_CUDA_H
#define CONDSEG_BACKEND_CUDA_H

#include <stddef.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend, started on first use (device $CONDSEG_CUDA_DEVICE, default 0: CUDA
 * runtime, cuBLAS, one stream); NULL when there is no usable GPU, with the reason in
 * `reason` ("no NVIDIA driver ...", "no NVIDIA GPU found (cudaGetDeviceCount: ...)").
 * Later calls return the same table (or the same failure). Errors of CUDA calls inside
 * operations abort with file:line and CUDA's message, since an operation cannot report. */
const cs_backend *cs_cuda_backend_open(char *reason, size_t reason_size);
/* The GPU in use ("NVIDIA H200, compute capability 9.0, 132 SMs, 141 GB"), or NULL
 * before a successful cs_cuda_backend_open. */
const char *cs_cuda_device_description(void);

/* TF32 tensor cores in cuBLAS's GEMMs (faster, about 1e-3 relative error): off unless
 * set here or by CONDSEG_TF32=1 in the environment when the backend starts. */
void cs_cuda_set_tf32(int allow);
int cs_cuda_tf32(void);

/* The most floats of convolution workspace one operation plans for (default 64 Mi
 * floats, 256 MB; 0 restores it): small values make the tests run the multi-image and
 * row-tiled convolution paths on small shapes. Both backends below share it. */
void cs_cuda_set_workspace_limit(size_t floats);

/* The same operations run by host loops in host memory (not host_memory: the parameter
 * mirror and the copies are exercised as on a GPU). Reductions are split and combined as
 * on the GPU (as if it had 132 multiprocessors), GEMMs are cuBLAS's column-major calls
 * through OpenBLAS. Its name is "cuda-emulated". */
const cs_backend *cs_cuda_emulated_backend(void);
/* The fast division of the kernels' index arithmetic against '/': the number of wrong
 * quotients over a sweep of divisors and numerators (0 expected). */
long cs_cuda_check_divider(void);

#ifdef __cplusplus
}
#endif

#endif
