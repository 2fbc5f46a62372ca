/* dnnl_compat.h — the part of oneDNN's C API condseg uses, the same for oneDNN 2.x (Debian
 * 12: libdnnl 2.6) and 3.x (Debian 13: 3.7), whose memory descriptors and primitive
 * descriptor constructors differ:
 *  - csd_md is a memory descriptor owned by the caller: a heap copy of 2.x's struct, 3.x's
 *    handle; either passes straight to the API's memory-descriptor arguments;
 *  - csd_*_pd create the primitive descriptors of a convolution (direct, or Winograd where
 *    the build has it) and of a matmul;
 *  - csd_append_sum / csd_append_relu are the post-ops whose arguments changed.
 * Every DNNL call returning a status goes through CSD_CHECK: a failure is an internal
 * error (the shapes and formats are ours), reported with the call. */
#ifndef CONDSEG_DNNL_COMPAT_H
#define CONDSEG_DNNL_COMPAT_H

#include <glib.h>
#include <oneapi/dnnl/dnnl.h>
#include <string.h>

#define CSD_CHECK(call)                                                                  \
    do {                                                                                 \
        dnnl_status_t st_ = (call);                                                      \
        if (st_ != dnnl_success)                                                         \
            g_error("oneDNN: %s failed (status %d)", #call, (int)st_);                   \
    } while (0)

#if DNNL_VERSION_MAJOR >= 3
typedef dnnl_memory_desc_t csd_md;

static inline csd_md csd_md_new(int ndims, const dnnl_dims_t dims, dnnl_data_type_t dt,
                                dnnl_format_tag_t tag) {
    csd_md md;
    CSD_CHECK(dnnl_memory_desc_create_with_tag(&md, ndims, dims, dt, tag));
    return md;
}
static inline csd_md csd_md_clone(const_dnnl_memory_desc_t from) {
    csd_md md;
    CSD_CHECK(dnnl_memory_desc_clone(&md, from));
    return md;
}
static inline void csd_md_free(csd_md md) {
    if (md) dnnl_memory_desc_destroy(md);
}
#else
typedef dnnl_memory_desc_t *csd_md;

static inline csd_md csd_md_new(int ndims, const dnnl_dims_t dims, dnnl_data_type_t dt,
                                dnnl_format_tag_t tag) {
    csd_md md = g_new(dnnl_memory_desc_t, 1);
    CSD_CHECK(dnnl_memory_desc_init_by_tag(md, ndims, dims, dt, tag));
    return md;
}
static inline csd_md csd_md_clone(const dnnl_memory_desc_t *from) {
    return g_memdup2(from, sizeof *from);
}
static inline void csd_md_free(csd_md md) { g_free(md); }
#endif

/* Geometry of a convolution descriptor: strides, dilations (oneDNN counts from 0),
 * left and right padding. */
typedef struct {
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} csd_conv_geometry;

#if DNNL_VERSION_MAJOR >= 3
static inline void csd_forward_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                  dnnl_prop_kind_t prop, csd_md src, csd_md weights,
                                  csd_md bias, csd_md dst, const csd_conv_geometry *g,
                                  const_dnnl_primitive_attr_t attr) {
    CSD_CHECK(dnnl_convolution_forward_primitive_desc_create(
        pd, engine, prop, dnnl_convolution_direct, src, weights, bias, dst, g->strides,
        g->dilates, g->pad_l, g->pad_r, attr));
}
/* Winograd: a status, not a check (not every oneDNN build or CPU has the kernels). */
static inline dnnl_status_t csd_winograd_forward_pd(dnnl_primitive_desc_t *pd,
                                                    dnnl_engine_t engine, csd_md src,
                                                    csd_md weights, csd_md bias, csd_md dst,
                                                    const csd_conv_geometry *g,
                                                    const_dnnl_primitive_attr_t attr) {
    return dnnl_convolution_forward_primitive_desc_create(
        pd, engine, dnnl_forward_inference, dnnl_convolution_winograd, src, weights, bias, dst,
        g->strides, g->dilates, g->pad_l, g->pad_r, attr);
}
static inline void csd_backward_data_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                        csd_md diff_src, csd_md weights, csd_md diff_dst,
                                        const csd_conv_geometry *g,
                                        const_dnnl_primitive_desc_t hint,
                                        const_dnnl_primitive_attr_t attr) {
    CSD_CHECK(dnnl_convolution_backward_data_primitive_desc_create(
        pd, engine, dnnl_convolution_direct, diff_src, weights, diff_dst, g->strides,
        g->dilates, g->pad_l, g->pad_r, hint, attr));
}
static inline void csd_backward_weights_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                           csd_md src, csd_md diff_weights, csd_md diff_dst,
                                           const csd_conv_geometry *g,
                                           const_dnnl_primitive_desc_t hint,
                                           const_dnnl_primitive_attr_t attr) {
    CSD_CHECK(dnnl_convolution_backward_weights_primitive_desc_create(
        pd, engine, dnnl_convolution_direct, src, diff_weights, NULL, diff_dst, g->strides,
        g->dilates, g->pad_l, g->pad_r, hint, attr));
}
static inline dnnl_status_t csd_matmul_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                          csd_md a, csd_md b, csd_md c) {
    return dnnl_matmul_primitive_desc_create(pd, engine, a, b, NULL, c, NULL);
}
static inline void csd_append_sum(dnnl_post_ops_t po) {
    CSD_CHECK(dnnl_post_ops_append_sum(po, 1.0f, 0, dnnl_data_type_undef));
}
static inline void csd_append_relu(dnnl_post_ops_t po) {
    CSD_CHECK(dnnl_post_ops_append_eltwise(po, dnnl_eltwise_relu, 0.0f, 0.0f));
}
#else
static inline void csd_forward_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                  dnnl_prop_kind_t prop, csd_md src, csd_md weights,
                                  csd_md bias, csd_md dst, const csd_conv_geometry *g,
                                  const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t d;
    CSD_CHECK(dnnl_dilated_convolution_forward_desc_init(
        &d, prop, dnnl_convolution_direct, src, weights, bias, dst, g->strides, g->dilates,
        g->pad_l, g->pad_r));
    CSD_CHECK(dnnl_primitive_desc_create(pd, &d, attr, engine, NULL));
}
static inline dnnl_status_t csd_winograd_forward_pd(dnnl_primitive_desc_t *pd,
                                                    dnnl_engine_t engine, csd_md src,
                                                    csd_md weights, csd_md bias, csd_md dst,
                                                    const csd_conv_geometry *g,
                                                    const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t d;
    dnnl_status_t st = dnnl_dilated_convolution_forward_desc_init(
        &d, dnnl_forward_inference, dnnl_convolution_winograd, src, weights, bias, dst,
        g->strides, g->dilates, g->pad_l, g->pad_r);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, attr, engine, NULL);
}
static inline void csd_backward_data_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                        csd_md diff_src, csd_md weights, csd_md diff_dst,
                                        const csd_conv_geometry *g,
                                        const_dnnl_primitive_desc_t hint,
                                        const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t d;
    CSD_CHECK(dnnl_dilated_convolution_backward_data_desc_init(
        &d, dnnl_convolution_direct, diff_src, weights, diff_dst, g->strides, g->dilates,
        g->pad_l, g->pad_r));
    CSD_CHECK(dnnl_primitive_desc_create(pd, &d, attr, engine, hint));
}
static inline void csd_backward_weights_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                           csd_md src, csd_md diff_weights, csd_md diff_dst,
                                           const csd_conv_geometry *g,
                                           const_dnnl_primitive_desc_t hint,
                                           const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t d;
    CSD_CHECK(dnnl_dilated_convolution_backward_weights_desc_init(
        &d, dnnl_convolution_direct, src, diff_weights, NULL, diff_dst, g->strides,
        g->dilates, g->pad_l, g->pad_r));
    CSD_CHECK(dnnl_primitive_desc_create(pd, &d, attr, engine, hint));
}
static inline dnnl_status_t csd_matmul_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                          csd_md a, csd_md b, csd_md c) {
    dnnl_matmul_desc_t d;
    dnnl_status_t st = dnnl_matmul_desc_init(&d, a, b, NULL, c);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, NULL, engine, NULL);
}
static inline void csd_append_sum(dnnl_post_ops_t po) {
    CSD_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
}
static inline void csd_append_relu(dnnl_post_ops_t po) {
    CSD_CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
}
#endif

#endif
