/* backend_cuda.cu — the CUDA backend: device memory, one stream, cuBLAS for the GEMMs and
 * the kernels of cuda_ops.cuh, run by DeviceExec (the executor interface of
 * cuda_exec.cuh): a grid-stride kernel per functor, and a block-per-(row, split)
 * reduction with a fixed tree, so that results do not vary from run to run.
 *
 * Everything runs in order on one non-blocking stream; host copies wait for it (inputs
 * and outputs only: activations and weights stay on the device between layers). cuBLAS
 * runs with CUBLAS_DEFAULT_MATH (no TF32) unless TF32 is allowed (cs_cuda_set_tf32 or
 * CONDSEG_TF32=1). A failing CUDA call inside an operation aborts with file:line and the
 * CUDA error, as an operation has no way to report it.
 *
 * cuBLAS is loaded when the backend starts (dlopen), not linked: libcublasLt's start-up
 * costs every process about 0.1 s, which programs and plug-ins running on the CPU should
 * not pay. The CUDA runtime is linked (it costs nothing until used).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cuda_ops.cuh"

/* ---- cuBLAS, loaded at run time -------------------------------------------------------- */

#define CSK_STR2(x) #x
#define CSK_STR(x) CSK_STR2(x)
#define CSK_CUBLAS_SONAME "libcublas.so." CSK_STR(CUBLAS_VER_MAJOR)

/* The entry points used, typed after cublas_api.h's declarations. */
static struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasSgemm_v2) sgemm;
    decltype(&cublasSgemmStridedBatched) sgemm_strided_batched;
    decltype(&cublasGetStatusString) status_string;
} blas_api;

/* Loads libcublas (the soname of the headers built against; then the toolkit's own folder,
 * known at build time). NULL, or the reason it failed in `why`. */
static int load_cublas(char *why, size_t size) {
    void *lib = dlopen(CSK_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
#ifdef CSK_CUBLAS_DIR
    if (!lib) lib = dlopen(CSK_CUBLAS_DIR "/" CSK_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
#endif
    if (!lib) {
        snprintf(why, size, "cuBLAS could not be loaded (%s)", dlerror());
        return 0;
    }
    const struct {
        const char *name;
        void **slot;
    } symbols[] = {
        {"cublasCreate_v2", (void **)&blas_api.create},
        {"cublasSetStream_v2", (void **)&blas_api.set_stream},
        {"cublasSetMathMode", (void **)&blas_api.set_math_mode},
        {"cublasSgemm_v2", (void **)&blas_api.sgemm},
        {"cublasSgemmStridedBatched", (void **)&blas_api.sgemm_strided_batched},
        {"cublasGetStatusString", (void **)&blas_api.status_string},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(lib, symbols[i].name);
        if (!*symbols[i].slot) {
            snprintf(why, size, "cuBLAS (%s) has no %s", CSK_CUBLAS_SONAME, symbols[i].name);
            return 0;
        }
    }
    return 1;
}

/* ---- error checks ------------------------------------------------------------------ */

#define CS_CUDA_CHECK(call) cs_cuda_check((call), #call, __FILE__, __LINE__)
#define CS_CUBLAS_CHECK(call) cs_cublas_check((call), #call, __FILE__, __LINE__)

static void cs_cuda_check(cudaError_t err, const char *what, const char *file, int line) {
    if (err == cudaSuccess) return;
    fprintf(stderr, "condseg: CUDA error at %s:%d: %s: %s (%s)\n", file, line, what,
            cudaGetErrorString(err), cudaGetErrorName(err));
    abort();
}

static void cs_cublas_check(cublasStatus_t status, const char *what, const char *file,
                            int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "condseg: cuBLAS error at %s:%d: %s: %s\n", file, line, what,
            blas_api.status_string(status));
    abort();
}

int csk_int_count(size_t n, const char *what) {
    if (n > (size_t)INT_MAX) {
        fprintf(stderr, "condseg: %s over %zu elements is more than the CUDA backend indexes "
                        "(2^31 - 1)\n", what, n);
        abort();
    }
    return (int)n;
}

/* ---- shared settings (this backend and the emulated one) ----------------------------- */

#define CSK_DEFAULT_WORKSPACE_FLOATS ((size_t)1 << 26)
static size_t workspace_limit = CSK_DEFAULT_WORKSPACE_FLOATS;

size_t csk_workspace_limit(void) { return workspace_limit; }

extern "C" void cs_cuda_set_workspace_limit(size_t floats) {
    workspace_limit = floats ? floats : CSK_DEFAULT_WORKSPACE_FLOATS;
}

/* ---- the device ------------------------------------------------------------------------ */

namespace {

struct device_state {
    int started, failed;
    char failure[512];
    char description[320];
    int sms;
    cudaStream_t stream;
    cublasHandle_t blas;
    int tf32;
    void *scratch[CSK_SCRATCH_SLOTS];
    size_t scratch_bytes[CSK_SCRATCH_SLOTS];
};

device_state dev;

}  // namespace

/* ---- the executor -------------------------------------------------------------------- */

#define CSK_THREADS 256

template <class F>
__global__ void __launch_bounds__(CSK_THREADS) csk_for_each_kernel(int n, F f) {
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        f((int)i);
}

/* Block (row, split) of a row reduction: each thread combines a strided part of the
 * split's range, then the block combines the 256 partial values in a fixed tree. */
template <class R, class Term, class Fin>
__global__ void __launch_bounds__(CSK_THREADS)
    csk_reduce_kernel(int len, int splits, Term term, Fin fin, typename R::V *partial) {
    __shared__ typename R::V buf[CSK_THREADS];
    const int row = blockIdx.x / splits, split = blockIdx.x - row * splits;
    int begin, end;
    csk_split_range(len, splits, split, &begin, &end);
    typename R::V acc = R::identity();
    for (int j = begin + threadIdx.x; j < end; j += CSK_THREADS) acc = R::combine(acc, term(row, j));
    buf[threadIdx.x] = acc;
    __syncthreads();
    for (int half = CSK_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) buf[threadIdx.x] = R::combine(buf[threadIdx.x], buf[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (partial) partial[blockIdx.x] = buf[0];
        else fin(row, buf[0]);
    }
}

struct DeviceExec {
    static int sm_count() { return dev.sms; }

    template <class F>
    static void for_each(int n, const F &f) {
        if (n <= 0) return;
        long blocks = ((long)n + CSK_THREADS - 1) / CSK_THREADS;
        const long most = (long)dev.sms * 16; /* the grid-stride loop does the rest */
        if (blocks > most) blocks = most;
        csk_for_each_kernel<F><<<(unsigned)blocks, CSK_THREADS, 0, dev.stream>>>(n, f);
        CS_CUDA_CHECK(cudaGetLastError());
    }

    template <class R, class Term, class Fin>
    static void reduce_blocks(int rows, int len, int splits, const Term &term, const Fin &fin,
                              typename R::V *partial) {
        const long blocks = (long)rows * splits;
        if (blocks > INT_MAX) csk_int_count((size_t)blocks, "reduction blocks");
        csk_reduce_kernel<R, Term, Fin>
            <<<(unsigned)blocks, CSK_THREADS, 0, dev.stream>>>(len, splits, term, fin, partial);
        CS_CUDA_CHECK(cudaGetLastError());
    }

    static void gemm_cm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc) {
        if (m <= 0 || n <= 0) return;
        CS_CUBLAS_CHECK(blas_api.sgemm(dev.blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, a, lda,
                                    b, ldb, &beta, c, ldc));
    }

    static void gemm_cm_batched(int trans_a, int trans_b, int m, int n, int k, float alpha,
                                const float *a, int lda, long long stride_a, const float *b,
                                int ldb, long long stride_b, float beta, float *c, int ldc,
                                long long stride_c, int batch) {
        if (m <= 0 || n <= 0 || batch <= 0) return;
        CS_CUBLAS_CHECK(blas_api.sgemm_strided_batched(
            dev.blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m,
            n, k, &alpha, a, lda, stride_a, b, ldb, stride_b, &beta, c, ldc, stride_c, batch));
    }

    /* Grown on demand; cudaFree waits for the work that may still use the old block. Out of
     * memory: NULL, noted for the guarded run (model/engine/graph.c), which ends with
     * CS_ERROR_MEMORY; the operation asking skips its work. */
    static void *scratch(int slot, size_t bytes) {
        if (bytes > dev.scratch_bytes[slot]) {
            if (dev.scratch[slot]) CS_CUDA_CHECK(cudaFree(dev.scratch[slot]));
            dev.scratch[slot] = NULL;
            dev.scratch_bytes[slot] = 0;
            const size_t want = bytes + bytes / 4;
            cudaError_t err = cudaMalloc(&dev.scratch[slot], want);
            if (err != cudaSuccess) {
                (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
                dev.scratch[slot] = NULL;
                cs_cpu_note_alloc_failure(want);
                return NULL;
            }
            dev.scratch_bytes[slot] = want;
        }
        return dev.scratch[slot];
    }
};

/* ---- memory ----------------------------------------------------------------------------- */

static void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is reported by returning NULL */
        return NULL;
    }
    return p;
}

static void cuda_release(void *p) {
    if (p) CS_CUDA_CHECK(cudaFree(p));
}

/* Host copies wait for the stream: the host buffer may be reused as soon as they return. */
static void cuda_upload(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, dev.stream));
    CS_CUDA_CHECK(cudaStreamSynchronize(dev.stream));
}

static void cuda_download(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, dev.stream));
    CS_CUDA_CHECK(cudaStreamSynchronize(dev.stream));
}

static void cuda_zero(void *p, size_t bytes) {
    if (bytes) CS_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, dev.stream));
}

static void cuda_synchronize(void) { CS_CUDA_CHECK(cudaStreamSynchronize(dev.stream)); }

static const cs_backend cuda_table =
    CudaOps<DeviceExec>::table("cuda", cuda_alloc, cuda_release, cuda_upload, cuda_download,
                               cuda_zero, cuda_synchronize);

/* ---- starting the backend -------------------------------------------------------------- */

/* Lets the start-up check find out whether this build has code for the GPU. */
__global__ void csk_probe_kernel(int *out) {
    if (out) *out = 1;
}

static int fail(const char *format, const char *detail) {
    snprintf(dev.failure, sizeof dev.failure, format, detail);
    dev.failed = 1;
    return 0;
}

static int start(void) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        /* "insufficient driver" is also what no driver at all gives: tell which. */
        if (err == cudaErrorInsufficientDriver) {
            void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
            if (!lib) return fail("no NVIDIA GPU found (%s)", "no NVIDIA driver: libcuda.so.1 not found");
            dlclose(lib);
            return fail("no usable NVIDIA GPU (%s)",
                        "the NVIDIA driver is older than the CUDA runtime condseg was built "
                        "with: update the driver");
        }
        return fail("no NVIDIA GPU found (cudaGetDeviceCount: %s)", cudaGetErrorString(err));
    }
    if (count < 1) return fail("no NVIDIA GPU found (cudaGetDeviceCount: %s)", "0 devices");
    int device = 0;
    const char *env = getenv("CONDSEG_CUDA_DEVICE");
    if (env && *env) {
        char *end = NULL;
        const long d = strtol(env, &end, 10);
        if (*end || d < 0 || d >= count)
            return fail("CONDSEG_CUDA_DEVICE=%s: no such GPU", env);
        device = (int)d;
    }
    cudaDeviceProp prop;
    if ((err = cudaSetDevice(device)) != cudaSuccess ||
        (err = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return fail("the GPU could not be started (%s)", cudaGetErrorString(err));
    cudaFuncAttributes attr;
    if ((err = cudaFuncGetAttributes(&attr, csk_probe_kernel)) != cudaSuccess) {
        char detail[384];
        snprintf(detail, sizeof detail,
                 "%s has compute capability %d.%d; this build has code for 8.0 and later (%s)",
                 prop.name, prop.major, prop.minor, cudaGetErrorString(err));
        (void)cudaGetLastError();
        return fail("unsupported GPU: %s", detail);
    }
    dev.sms = prop.multiProcessorCount;
    snprintf(dev.description, sizeof dev.description,
             "%s, compute capability %d.%d, %d SMs, %.0f GB", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, prop.totalGlobalMem / 1e9);
    if ((err = cudaStreamCreateWithFlags(&dev.stream, cudaStreamNonBlocking)) != cudaSuccess)
        return fail("the GPU could not be started (cudaStreamCreate: %s)",
                    cudaGetErrorString(err));
    char why[400];
    if (!load_cublas(why, sizeof why)) return fail("%s", why);
    cublasStatus_t status = blas_api.create(&dev.blas);
    if (status != CUBLAS_STATUS_SUCCESS)
        return fail("cuBLAS could not be started (cublasCreate: %s)",
                    blas_api.status_string(status));
    CS_CUBLAS_CHECK(blas_api.set_stream(dev.blas, dev.stream));
    const char *tf32 = getenv("CONDSEG_TF32");
    if (tf32 && strcmp(tf32, "1") == 0) dev.tf32 = 1;
    CS_CUBLAS_CHECK(blas_api.set_math_mode(dev.blas, dev.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                              : CUBLAS_DEFAULT_MATH));
    dev.started = 1;
    return 1;
}

extern "C" const cs_backend *cs_cuda_backend_open(char *reason, size_t reason_size) {
    if (!dev.started && !dev.failed) start();
    if (dev.started) return &cuda_table;
    if (reason && reason_size) snprintf(reason, reason_size, "%s", dev.failure);
    return NULL;
}

extern "C" const char *cs_cuda_device_description(void) {
    return dev.started ? dev.description : NULL;
}

extern "C" void cs_cuda_set_tf32(int allow) {
    dev.tf32 = allow != 0;
    if (dev.started)
        CS_CUBLAS_CHECK(blas_api.set_math_mode(dev.blas, dev.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                  : CUBLAS_DEFAULT_MATH));
}

extern "C" int cs_cuda_tf32(void) { return dev.tf32; }
