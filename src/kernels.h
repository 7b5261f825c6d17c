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

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_MSC_VER)
#define LRC_RESTRICT __restrict
#define LRC_ALWAYS_INLINE static __forceinline
#else
#define LRC_RESTRICT __restrict__
#define LRC_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

typedef ptrdiff_t lrc_index;

typedef enum { LRC_FLOAT32 = 0, LRC_FLOAT64 = 1 } lrc_dtype;

typedef enum { LRC_SGD = 0, LRC_ADAGRAD = 1, LRC_RMSPROP = 2, LRC_ADAM = 3 } lrc_kind;

/* Hyperparameters of one call, in double; each optimizer reads its own fields.
 * lr is this update's rate (schedule already evaluated). */
typedef struct {
    double lr;
    double weight_decay;
    double momentum;        /* SGD, RMSprop */
    double dampening;       /* SGD */
    double beta1, beta2;    /* Adam */
    double eps;             /* Adagrad, RMSprop, Adam */
    double alpha;           /* RMSprop smoothing */
    double lr_decay;        /* Adagrad */
    int nesterov;           /* SGD */
    int centered;           /* RMSprop */
    int amsgrad;            /* Adam */
    int decoupled_weight_decay;  /* Adam: AdamW's p *= 1 - lr*wd instead of g += wd*p */
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

/* Adam weight-decay modes. */
enum { LRC_WD_NONE, LRC_WD_L2, LRC_WD_DECOUPLED };

/* The dtype-generic loops: kernels_impl.h is included once per element type. */
#define LRC_REAL float
#define LRC_NAME(name) name##_f32
#define LRC_SQRT sqrtf
#include "kernels_impl.h"
#undef LRC_REAL
#undef LRC_NAME
#undef LRC_SQRT

#define LRC_REAL double
#define LRC_NAME(name) name##_f64
#define LRC_SQRT sqrt
#include "kernels_impl.h"
#undef LRC_REAL
#undef LRC_NAME
#undef LRC_SQRT

static inline int lrc_sgd_mode(const lrc_hyper *h, int64_t step)
{
    if (h->momentum == 0.0) return LRC_MOM_NONE;
    if (step == 0) return h->nesterov ? LRC_MOM_FIRST_NESTEROV : LRC_MOM_FIRST;
    return h->nesterov ? LRC_MOM_NESTEROV : LRC_MOM_HEAVY_BALL;
}

/* Bit i set: buf[i] must be non-NULL for these options (the caller checks before the loop). */
static inline int lrc_required_buffers(lrc_kind kind, const lrc_hyper *h)
{
    switch (kind) {
    case LRC_SGD:     return h->momentum != 0.0 ? 1 : 0;
    case LRC_ADAGRAD: return 1;
    case LRC_RMSPROP: return 1 | (h->centered ? 2 : 0) | (h->momentum != 0.0 ? 4 : 0);
    case LRC_ADAM:    return 1 | 2 | (h->amsgrad ? 4 : 0);
    }
    return 0;
}

#define LRC_DISPATCH(fn, a, ...)                                                           \
    ((a)->dtype == LRC_FLOAT32                                                             \
        ? fn##_f32((float *)(a)->param, (const float *)(a)->grad, (float *)(a)->buf[0],   \
                   (float *)(a)->buf[1], (float *)(a)->buf[2], (a)->n, __VA_ARGS__)        \
        : fn##_f64((double *)(a)->param, (const double *)(a)->grad, (double *)(a)->buf[0], \
                   (double *)(a)->buf[1], (double *)(a)->buf[2], (a)->n, __VA_ARGS__))

/* One optimizer update of one array. Per-array scalars that depend on the array's own update
 * number t = step + 1 (Adagrad's decayed rate, Adam's bias corrections) are computed here,
 * once, in double. */
static inline void lrc_update(lrc_kind kind, const lrc_hyper *h, const lrc_array *a)
{
    const double t = (double)a->step + 1.0;
    switch (kind) {
    case LRC_SGD:
        LRC_DISPATCH(sgd, a, h, lrc_sgd_mode(h, a->step));
        break;
    case LRC_ADAGRAD:
        LRC_DISPATCH(adagrad, a, h, h->lr / (1.0 + (t - 1.0) * h->lr_decay));
        break;
    case LRC_RMSPROP:
        LRC_DISPATCH(rmsprop, a, h);
        break;
    case LRC_ADAM:
        LRC_DISPATCH(adam, a, h, h->lr / (1.0 - pow(h->beta1, t)), sqrt(1.0 - pow(h->beta2, t)));
        break;
    }
}

#undef LRC_DISPATCH

#endif /* LRCORE_KERNELS_H */
