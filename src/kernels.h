/* lrcore element kernels: in-place optimizer updates over flat float32 / float64 buffers.
 *
 * Everything here runs without the GIL on raw pointers that _kernels.pyx has already
 * validated (dtype, C-contiguity, alignment, writeability, no overlap between written and
 * read buffers), which is what makes the `restrict` qualifiers below true.
 *
 * Numerics: per-call scalars arrive in double (lrc_hyper) and are cast once to the buffers'
 * dtype; the element loop then runs in that dtype, one IEEE operation at a time. The build
 * passes -ffp-contract=off so no multiply-add is fused: the compiled step is bit-identical
 * to the numpy reference (lrcore/reference.py) on every target.
 */
#ifndef LRCORE_KERNELS_H
#define LRCORE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_MSC_VER)
#define LRC_RESTRICT __restrict
#else
#define LRC_RESTRICT __restrict__
#endif

typedef ptrdiff_t lrc_index;

typedef enum { LRC_FLOAT32 = 0, LRC_FLOAT64 = 1 } lrc_dtype;

/* Hyperparameters of one call, in double. lr is this update's rate (schedule evaluated). */
typedef struct {
    double lr;
    double weight_decay;
    double momentum;
    double dampening;
    int nesterov;
    int maximize;
} lrc_hyper;

/* One parameter array of a multi-array step. */
typedef struct {
    void *param;            /* written */
    const void *grad;       /* read only */
    void *buf[3];           /* optimizer buffers, NULL where the options need none */
    lrc_index n;            /* element count */
    int64_t step;           /* this array's update count before this update */
    lrc_dtype dtype;
} lrc_array;

/* SGD momentum modes; nesterov and the first step (which copies the gradient into the
 * buffer, as torch.optim does) are separate loops rather than per-element branches. */
enum { LRC_MOM_NONE, LRC_MOM_FIRST, LRC_MOM_FIRST_NESTEROV, LRC_MOM_HEAVY_BALL, LRC_MOM_NESTEROV };

/* The dtype-generic loops: kernels_impl.h is included once per element type. */
#define LRC_REAL float
#define LRC_NAME(name) name##_f32
#include "kernels_impl.h"
#undef LRC_REAL
#undef LRC_NAME

#define LRC_REAL double
#define LRC_NAME(name) name##_f64
#include "kernels_impl.h"
#undef LRC_REAL
#undef LRC_NAME

static inline int lrc_sgd_mode(const lrc_hyper *h, int64_t step)
{
    if (h->momentum == 0.0) return LRC_MOM_NONE;
    if (step == 0) return h->nesterov ? LRC_MOM_FIRST_NESTEROV : LRC_MOM_FIRST;
    return h->nesterov ? LRC_MOM_NESTEROV : LRC_MOM_HEAVY_BALL;
}

/* SGD on one array: dispatch on dtype; the per-call scalars are cast to it here. */
static inline void lrc_sgd(const lrc_hyper *h, const lrc_array *a)
{
    const int mode = lrc_sgd_mode(h, a->step);
    if (a->dtype == LRC_FLOAT32)
        sgd_f32((float *)a->param, (const float *)a->grad, (float *)a->buf[0], a->n, h, mode);
    else
        sgd_f64((double *)a->param, (const double *)a->grad, (double *)a->buf[0], a->n, h, mode);
}

#endif /* LRCORE_KERNELS_H */
