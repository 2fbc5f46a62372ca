/* conv_dnnl.h — the oneDNN engine of the CPU convolutions (conv_dnnl.c), called by
 * conv_cpu.c's dispatch; same operands and conventions as cs_cpu_conv2d_forward/_backward
 * (backend_ops.h). */
#ifndef CONDSEG_CONV_DNNL_H
#define CONDSEG_CONV_DNNL_H

#include "kernels.h"

/* Floats of scratch memory the oneDNN forward / backward of this shape needs. */
size_t csk_dnnl_conv_forward_workspace(const cs_conv_shape *s);
size_t csk_dnnl_conv_backward_workspace(const cs_conv_shape *s);

/* Whether the forward of this shape runs oneDNN's Winograd kernel (see conv_dnnl.c). */
int csk_dnnl_conv_winograd(const cs_conv_shape *s);

/* Whether oneDNN has only its own im2col + GEMM (or reference) kernel for this shape. */
int csk_dnnl_conv_fallback(const cs_conv_shape *s);

/* y = conv(x, w) * scale + shift (+ ReLU); scale/shift as in backend_ops.h. */
void csk_dnnl_conv_forward(float *y, const float *x, const float *w, const float *scale,
                           const float *shift, const cs_conv_shape *s, int relu,
                           float *workspace);
/* dw += dW, and dx += dX when dx is not NULL (the bias gradient is the caller's). */
void csk_dnnl_conv_backward(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, const cs_conv_shape *s, float *workspace);

#endif
