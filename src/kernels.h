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

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

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
    const void *grad;       /* read only; NULL (with n == 0) for an array the call skips */
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
#define LRC_BITS uint32_t
#define LRC_NAME(name) name##_f32
#define LRC_SQRT sqrtf
#include "kernels_impl.h"
#undef LRC_REAL
#undef LRC_BITS
#undef LRC_NAME
#undef LRC_SQRT

#define LRC_REAL double
#define LRC_BITS uint64_t
#define LRC_NAME(name) name##_f64
#define LRC_SQRT sqrt
#include "kernels_impl.h"
#undef LRC_REAL
#undef LRC_BITS
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

/* Runtime ISA dispatch: on x86-64 Linux with GCC, lrc_update is compiled once per target
 * below and the loader picks the best the CPU supports (an ifunc), so the default build stays
 * portable (no -march=native) and still runs AVX2 / AVX-512 loops. Every version performs the
 * same IEEE operations (no FMA contraction), so results are bit-identical on every ISA. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(LRC_NO_DISPATCH)
#define LRC_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#define LRC_ISA_COMPILED "avx512f,avx2,default"
static inline const char *lrc_isa_dispatched(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512f";
    if (__builtin_cpu_supports("avx2")) return "avx2";
    return "default";
}
#else
#define LRC_MULTIVERSION
#define LRC_ISA_COMPILED "default"
static inline const char *lrc_isa_dispatched(void) { return "default"; }
#endif

/* One optimizer update of one array. Per-array scalars that depend on the array's own update
 * number t = step + 1 (Adagrad's decayed rate, Adam's bias corrections) are computed here,
 * once, in double, from the exact integers step and step + 1 each rounded once to double, as
 * the reference's Python ints are (they differ from (double)step + 1.0 at step >= 2**53).
 * step + 1 cannot overflow: a step at step == INT64_MAX is refused before any kernel runs. */
LRC_MULTIVERSION
static void lrc_update(lrc_kind kind, const lrc_hyper *h, const lrc_array *a)
{
    const double t = (double)(a->step + 1);
    switch (kind) {
    case LRC_SGD:
        LRC_DISPATCH(sgd, a, h, lrc_sgd_mode(h, a->step));
        break;
    case LRC_ADAGRAD:
        LRC_DISPATCH(adagrad, a, h, h->lr / (1.0 + (double)a->step * h->lr_decay));
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

/* Parallel work items are chunks of this many elements (a multiple of every vector width);
 * a call with fewer than LRC_PARALLEL_MIN elements in all runs on the calling thread. */
#define LRC_CHUNK ((lrc_index)32768)
#define LRC_PARALLEL_MIN (2 * LRC_CHUNK)

/* Elements [start, start + count) of an array, as an array of its own. */
static inline lrc_array lrc_slice(const lrc_array *a, lrc_index start, lrc_index count)
{
    const size_t size = a->dtype == LRC_FLOAT32 ? sizeof(float) : sizeof(double);
    lrc_array s = *a;
    s.param = (char *)a->param + start * size;
    s.grad = (const char *)a->grad + start * size;
    for (int j = 0; j < 3; j++)
        if (a->buf[j]) s.buf[j] = (char *)a->buf[j] + start * size;
    s.n = count;
    return s;
}

/* 1 when every gradient element of the array is finite. |g| <= max is false for NaN and
 * for ±inf; an OR over the comparison vectorizes (no float reduction order involved). */
LRC_MULTIVERSION
static int lrc_grad_finite(const lrc_array *a)
{
    int bad = 0;
    if (a->dtype == LRC_FLOAT32) {
        const float *LRC_RESTRICT g = (const float *)a->grad;
        for (lrc_index i = 0; i < a->n; i++) bad |= !(fabsf(g[i]) <= FLT_MAX);
    } else {
        const double *LRC_RESTRICT g = (const double *)a->grad;
        for (lrc_index i = 0; i < a->n; i++) bad |= !(fabs(g[i]) <= DBL_MAX);
    }
    return !bad;
}

/* What a pass over the arrays does to each piece: an optimizer update, or a finiteness test
 * of the gradients that clears `finite` when it fails. */
typedef struct {
    lrc_kind kind;
    const lrc_hyper *h;
    int check_only;
    int finite;             /* written only as 0, by any thread: a relaxed atomic store */
} lrc_pass;

static inline void lrc_pass_piece(lrc_pass *pass, const lrc_array *piece)
{
    if (pass->check_only) {
        if (!lrc_grad_finite(piece)) {
#if defined(__GNUC__) || defined(__clang__)
            __atomic_store_n(&pass->finite, 0, __ATOMIC_RELAXED);
#else
            pass->finite = 0;
#endif
        }
    } else {
        lrc_update(pass->kind, pass->h, piece);
    }
}

/* A pass cut into LRC_CHUNK-element chunks numbered across the arrays: first[i] is the number
 * of array i's first chunk, first[count] the number of chunks. */
typedef struct {
    lrc_pass *pass;
    const lrc_array *arrays;
    lrc_index count;
    const lrc_index *first;
} lrc_chunked_pass;

static void lrc_pass_chunk(void *ctx, ptrdiff_t c)
{
    const lrc_chunked_pass *job = (const lrc_chunked_pass *)ctx;
    /* the array holding chunk c: the last lo with first[lo] <= c (so first[lo + 1] > c, which
     * also steps over empty arrays) */
    lrc_index lo = 0, hi = job->count;
    while (hi - lo > 1) {
        const lrc_index mid = lo + (hi - lo) / 2;
        if (job->first[mid] <= c) lo = mid; else hi = mid;
    }
    const lrc_array *a = &job->arrays[lo];
    const lrc_index start = (c - job->first[lo]) * LRC_CHUNK;
    const lrc_index n = a->n - start < LRC_CHUNK ? a->n - start : LRC_CHUNK;
    const lrc_array piece = lrc_slice(a, start, n);
    lrc_pass_piece(job->pass, &piece);
}

/* Run a pass over all arrays of a call. With threads > 1 and enough elements, the chunks are
 * shared out by the thread pool (src/pool.h); every element gets the same operations from
 * exactly one thread, so results do not depend on the thread count. Returns 0, or -1 if memory
 * for the chunk index ran out (nothing has been done then). */
static int lrc_for_all(lrc_pass *pass, const lrc_array *arrays, lrc_index count, int threads)
{
    lrc_index total = 0;
    for (lrc_index i = 0; i < count; i++) total += arrays[i].n;
    if (threads > 1 && total >= LRC_PARALLEL_MIN) {
        lrc_index *first = (lrc_index *)malloc((size_t)(count + 1) * sizeof(lrc_index));
        if (!first) return -1;
        first[0] = 0;
        for (lrc_index i = 0; i < count; i++)
            first[i + 1] = first[i] + (arrays[i].n + LRC_CHUNK - 1) / LRC_CHUNK;
        lrc_chunked_pass job = {pass, arrays, count, first};
        lrc_pool_run(threads, first[count], lrc_pass_chunk, &job);
        free(first);
        return 0;
    }
    for (lrc_index i = 0; i < count; i++) lrc_pass_piece(pass, &arrays[i]);
    return 0;
}

/* The update of all arrays (arrays with n == 0, such as those a None gradient skips, are
 * left alone). Returns 0, or -1 when out of memory (nothing written). */
static int lrc_run(lrc_kind kind, const lrc_hyper *h, const lrc_array *arrays, lrc_index count,
                   int threads)
{
    lrc_pass pass = {kind, h, 0, 1};
    return lrc_for_all(&pass, arrays, count, threads);
}

/* 1 when every gradient is finite, 0 when one is not, -1 when out of memory. */
static int lrc_all_finite(const lrc_array *arrays, lrc_index count, int threads)
{
    lrc_pass pass = {LRC_SGD, NULL, 1, 1};
    if (lrc_for_all(&pass, arrays, count, threads)) return -1;
    return pass.finite;
}

#define LRC_STR_(x) #x
#define LRC_STR(x) LRC_STR_(x)
#if defined(__clang__)
#define LRC_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define LRC_COMPILER "gcc " __VERSION__
#elif defined(_MSC_VER)
#define LRC_COMPILER "msvc " LRC_STR(_MSC_VER)
#else
#define LRC_COMPILER "unknown"
#endif

#endif /* LRCORE_KERNELS_H */
