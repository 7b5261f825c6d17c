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

#include "formats.h"
#include "pool.h"

#if defined(_MSC_VER)
#define LRC_RESTRICT __restrict
#else
#define LRC_RESTRICT __restrict__
#endif

typedef ptrdiff_t lrc_index;

typedef enum { LRC_SGD = 0, LRC_ADAGRAD = 1, LRC_RMSPROP = 2, LRC_ADAM = 3 } lrc_kind;

/* Hyperparameters of one call, in double; each optimizer reads its own fields.
 * lr is this update's rate (schedule already evaluated); grad_factor is this call's
 * (1 / grad_scale)·(clipping coefficient), the first operation applied to every gradient. */
typedef struct {
    double lr;
    double grad_factor;
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

/* One parameter array of a multi-array step, with the storage format of each part. */
typedef struct {
    void *param;            /* written */
    const void *grad;       /* read only; NULL (with n == 0) for an array the call skips */
    void *buf[3];           /* optimizer buffers, NULL where the options need none */
    lrc_index n;            /* element count */
    int64_t step;           /* this array's update count before this update */
    lrc_format pfmt, gfmt, bfmt;    /* params, grads, buffers */
} lrc_array;

/* SGD momentum modes; nesterov and the first step (which copies the gradient into the
 * buffer, as torch.optim does) are separate loops rather than per-element branches. */
enum { LRC_MOM_NONE, LRC_MOM_FIRST, LRC_MOM_FIRST_NESTEROV, LRC_MOM_HEAVY_BALL, LRC_MOM_NESTEROV };

/* Adam weight-decay modes. */
enum { LRC_WD_NONE, LRC_WD_L2, LRC_WD_DECOUPLED };

/* The storage combinations a step runs (API.md's table), the only ones instantiated:
 *   X(suffix, params, grads, buffers, math)
 * lrcore._validate.COMBINATIONS is the same table for the Python side (a test compares them).
 * Each row's loops come from one inclusion of kernels_impl.h below. */
#define LRC_COMBOS(X)                                                            \
    X(f64,       LRC_FLOAT64,  LRC_FLOAT64,  LRC_FLOAT64,  double)               \
    X(f32,       LRC_FLOAT32,  LRC_FLOAT32,  LRC_FLOAT32,  float)                \
    X(f32_gf16,  LRC_FLOAT32,  LRC_FLOAT16,  LRC_FLOAT32,  float)                \
    X(f32_gbf16, LRC_FLOAT32,  LRC_BFLOAT16, LRC_FLOAT32,  float)                \
    X(f16,       LRC_FLOAT16,  LRC_FLOAT16,  LRC_FLOAT16,  float)                \
    X(bf16,      LRC_BFLOAT16, LRC_BFLOAT16, LRC_BFLOAT16, float)

/* 1 when the kernels have loops for this combination of formats. */
static inline int lrc_combination_supported(lrc_format p, lrc_format g, lrc_format b)
{
#define LRC_SUPPORTED(sfx, P, G, B, R) if (p == P && g == G && b == B) return 1;
    LRC_COMBOS(LRC_SUPPORTED)
#undef LRC_SUPPORTED
    return 0;
}

/* The C type each format is stored as. */
#define LRC_STORAGE_LRC_FLOAT64 double
#define LRC_STORAGE_LRC_FLOAT32 float
#define LRC_STORAGE_LRC_FLOAT16 uint16_t
#define LRC_STORAGE_LRC_BFLOAT16 uint16_t

/* Loads and stores of each format, as kernels_impl.h uses them. */
#define LRC_IDENTITY(x) (x)

#define LRC_SQRT sqrt
#define LRC_REAL double
#define LRC_BITS uint64_t
#define LRC_NAME(name) name##_f64
#define LRC_P double
#define LRC_G double
#define LRC_B double
#define LRC_LOAD_P LRC_IDENTITY
#define LRC_STORE_P LRC_IDENTITY
#define LRC_LOAD_G LRC_IDENTITY
#define LRC_LOAD_B LRC_IDENTITY
#define LRC_STORE_B LRC_IDENTITY
#include "kernels_impl.h"
#undef LRC_SQRT
#undef LRC_REAL
#undef LRC_BITS
#define LRC_SQRT sqrtf
#define LRC_REAL float
#define LRC_BITS uint32_t

/* float32 params and buffers, grads float32 / float16 / bfloat16 */
#undef LRC_NAME
#undef LRC_P
#undef LRC_G
#undef LRC_B
#define LRC_P float
#define LRC_B float
#define LRC_NAME(name) name##_f32
#define LRC_G float
#include "kernels_impl.h"
#undef LRC_NAME
#undef LRC_G
#undef LRC_LOAD_G
#define LRC_NAME(name) name##_f32_gf16
#define LRC_G uint16_t
#define LRC_LOAD_G lrc_load_f16
#include "kernels_impl.h"
#undef LRC_NAME
#undef LRC_LOAD_G
#define LRC_NAME(name) name##_f32_gbf16
#define LRC_LOAD_G lrc_load_bf16
#include "kernels_impl.h"

/* half-precision params, grads and buffers, math in float32 */
#undef LRC_NAME
#undef LRC_P
#undef LRC_B
#undef LRC_LOAD_P
#undef LRC_STORE_P
#undef LRC_LOAD_G
#undef LRC_LOAD_B
#undef LRC_STORE_B
#define LRC_P uint16_t
#define LRC_B uint16_t
#define LRC_NAME(name) name##_f16
#define LRC_LOAD_P lrc_load_f16
#define LRC_STORE_P lrc_store_f16
#define LRC_LOAD_G lrc_load_f16
#define LRC_LOAD_B lrc_load_f16
#define LRC_STORE_B lrc_store_f16
#include "kernels_impl.h"
#undef LRC_NAME
#undef LRC_LOAD_P
#undef LRC_STORE_P
#undef LRC_LOAD_G
#undef LRC_LOAD_B
#undef LRC_STORE_B
#define LRC_NAME(name) name##_bf16
#define LRC_LOAD_P lrc_load_bf16
#define LRC_STORE_P lrc_store_bf16
#define LRC_LOAD_G lrc_load_bf16
#define LRC_LOAD_B lrc_load_bf16
#define LRC_STORE_B lrc_store_bf16
#include "kernels_impl.h"
#undef LRC_NAME
#undef LRC_P
#undef LRC_G
#undef LRC_B
#undef LRC_LOAD_P
#undef LRC_STORE_P
#undef LRC_LOAD_G
#undef LRC_LOAD_B
#undef LRC_STORE_B
#undef LRC_SQRT
#undef LRC_REAL
#undef LRC_BITS

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
#define LRC_CALL(fn, sfx, P, G, B, ...)                                                   \
    fn##_##sfx((P *)a->param, (const G *)a->grad, (B *)a->buf[0], (B *)a->buf[1],          \
               (B *)a->buf[2], a->n, h, ##__VA_ARGS__)
#define LRC_UPDATE(sfx, PF, GF, BF, R)                                                     \
    if (a->pfmt == PF && a->gfmt == GF && a->bfmt == BF) {                                 \
        typedef LRC_STORAGE_##PF P; typedef LRC_STORAGE_##GF G; typedef LRC_STORAGE_##BF B;\
        switch (kind) {                                                                    \
        case LRC_SGD: LRC_CALL(sgd, sfx, P, G, B, lrc_sgd_mode(h, a->step)); return;       \
        case LRC_ADAGRAD:                                                                  \
            LRC_CALL(adagrad, sfx, P, G, B, h->lr / (1.0 + (double)a->step * h->lr_decay));\
            return;                                                                        \
        case LRC_RMSPROP: LRC_CALL(rmsprop, sfx, P, G, B); return;                         \
        case LRC_ADAM:                                                                     \
            LRC_CALL(adam, sfx, P, G, B, h->lr / (1.0 - pow(h->beta1, t)),                 \
                     sqrt(1.0 - pow(h->beta2, t)));                                        \
            return;                                                                        \
        }                                                                                  \
    }
    LRC_COMBOS(LRC_UPDATE)
#undef LRC_UPDATE
#undef LRC_CALL
}


/* Parallel work items are chunks of this many elements (a multiple of every vector width);
 * a call with fewer than LRC_PARALLEL_MIN elements in all runs on the calling thread. */
#define LRC_CHUNK ((lrc_index)32768)
#define LRC_PARALLEL_MIN (2 * LRC_CHUNK)

/* Elements [start, start + count) of an array, as an array of its own. */
static inline lrc_array lrc_slice(const lrc_array *a, lrc_index start, lrc_index count)
{
    const size_t psize = lrc_format_size(a->pfmt), bsize = lrc_format_size(a->bfmt);
    lrc_array s = *a;
    s.param = (char *)a->param + start * psize;
    s.grad = (const char *)a->grad + start * lrc_format_size(a->gfmt);
    for (int j = 0; j < 3; j++)
        if (a->buf[j]) s.buf[j] = (char *)a->buf[j] + start * bsize;
    s.n = count;
    return s;
}

/* 1 when every gradient element of the array is finite: its exponent bits are not all ones
 * (an integer test, so half formats need no conversion); an OR over the comparison
 * vectorizes. */
LRC_MULTIVERSION
static int lrc_grad_finite(const lrc_array *a)
{
    unsigned bad = 0;
    lrc_index i;
    switch (a->gfmt) {
    case LRC_FLOAT32: {
        const uint32_t *LRC_RESTRICT g = (const uint32_t *)a->grad;
        for (i = 0; i < a->n; i++) bad |= (g[i] & 0x7f800000u) == 0x7f800000u;
        break;
    }
    case LRC_FLOAT64: {
        const uint64_t *LRC_RESTRICT g = (const uint64_t *)a->grad;
        for (i = 0; i < a->n; i++) bad |= (g[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u;
        break;
    }
    case LRC_FLOAT16: {
        const uint16_t *LRC_RESTRICT g = (const uint16_t *)a->grad;
        for (i = 0; i < a->n; i++) bad |= (g[i] & 0x7c00u) == 0x7c00u;
        break;
    }
    case LRC_BFLOAT16: {
        const uint16_t *LRC_RESTRICT g = (const uint16_t *)a->grad;
        for (i = 0; i < a->n; i++) bad |= (g[i] & 0x7f80u) == 0x7f80u;
        break;
    }
    }
    return !bad;
}

/* The sum of squares of a piece of gradient (at most one chunk) in float64, in the order
 * API.md fixes so that the norm does not depend on threads or ISA: element i adds its square
 * to lane i mod LRC_LANES (each lane in element order), then the lanes are summed pairwise
 * (lane j + lane j + 8, then + 4, + 2, + 1). lrcore/reference.py's grad_sumsq does the
 * same with numpy. *bad is set when an element is not finite. */
#define LRC_LANES 16
LRC_MULTIVERSION
static double lrc_grad_sumsq_piece(const lrc_array *a, int *bad)
{
    double acc[LRC_LANES] = {0};
    unsigned nonfinite = 0;
    const lrc_index n = a->n, body = n - n % LRC_LANES;
#define LRC_SUMSQ(T, LOAD)                                                                 \
    {                                                                                      \
        const T *LRC_RESTRICT g = (const T *)a->grad;                                      \
        for (lrc_index i = 0; i < body; i += LRC_LANES)                                    \
            for (int j = 0; j < LRC_LANES; j++) {                                          \
                const double x = (double)LOAD(g[i + j]);                                   \
                acc[j] += x * x;                                                           \
                nonfinite |= !(fabs(x) <= DBL_MAX);                                        \
            }                                                                              \
        for (lrc_index i = body; i < n; i++) {                                             \
            const double x = (double)LOAD(g[i]);                                           \
            acc[i - body] += x * x;                                                        \
            nonfinite |= !(fabs(x) <= DBL_MAX);                                            \
        }                                                                                  \
    }
    switch (a->gfmt) {
    case LRC_FLOAT32:  LRC_SUMSQ(float, LRC_IDENTITY) break;
    case LRC_FLOAT64:  LRC_SUMSQ(double, LRC_IDENTITY) break;
    case LRC_FLOAT16:  LRC_SUMSQ(uint16_t, lrc_load_f16) break;
    case LRC_BFLOAT16: LRC_SUMSQ(uint16_t, lrc_load_bf16) break;
    }
#undef LRC_SUMSQ
    for (int width = LRC_LANES / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) acc[j] = acc[j] + acc[j + width];
    if (nonfinite) *bad = 1;
    return acc[0];
}

/* What a pass over the arrays does to each piece: an optimizer update, a finiteness test of
 * the gradients (clearing `finite` when it fails), or their sum of squares per chunk (into
 * sumsq[chunk number]) with the finiteness test. */
typedef enum { LRC_PASS_UPDATE, LRC_PASS_FINITE, LRC_PASS_SUMSQ } lrc_pass_kind;

typedef struct {
    lrc_pass_kind what;
    lrc_kind kind;
    const lrc_hyper *h;
    int finite;             /* written only as 0, by any thread: a relaxed atomic store */
    double *sumsq;          /* LRC_PASS_SUMSQ: one partial sum per chunk */
} lrc_pass;

static inline void lrc_clear_finite(lrc_pass *pass)
{
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&pass->finite, 0, __ATOMIC_RELAXED);
#else
    pass->finite = 0;
#endif
}

static inline void lrc_pass_piece(lrc_pass *pass, const lrc_array *piece, lrc_index chunk)
{
    int bad = 0;
    switch (pass->what) {
    case LRC_PASS_UPDATE:
        lrc_update(pass->kind, pass->h, piece);
        break;
    case LRC_PASS_FINITE:
        if (!lrc_grad_finite(piece)) lrc_clear_finite(pass);
        break;
    case LRC_PASS_SUMSQ:
        pass->sumsq[chunk] = lrc_grad_sumsq_piece(piece, &bad);
        if (bad) lrc_clear_finite(pass);
        break;
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
    lrc_pass_piece(job->pass, &piece, c);
}

/* Run a pass over all arrays of a call. With threads > 1 and enough elements, the chunks are
 * shared out by the thread pool (src/pool.h); every element gets the same operations from
 * exactly one thread, so results do not depend on the thread count. A LRC_PASS_SUMSQ pass
 * leaves the sum of its per-chunk partial sums, added in chunk order, in *total (on one
 * thread it goes chunk by chunk, in the same order). Returns 0, or -1 if memory ran out
 * (nothing has been done then). */
static int lrc_for_all(lrc_pass *pass, const lrc_array *arrays, lrc_index count, int threads,
                       double *total)
{
    lrc_index elements = 0;
    for (lrc_index i = 0; i < count; i++) elements += arrays[i].n;
    if (threads > 1 && elements >= LRC_PARALLEL_MIN) {
        lrc_index *first = (lrc_index *)malloc((size_t)(count + 1) * sizeof(lrc_index));
        if (!first) return -1;
        first[0] = 0;
        for (lrc_index i = 0; i < count; i++)
            first[i + 1] = first[i] + (arrays[i].n + LRC_CHUNK - 1) / LRC_CHUNK;
        if (pass->what == LRC_PASS_SUMSQ) {
            pass->sumsq = (double *)malloc((size_t)(first[count] + 1) * sizeof(double));
            if (!pass->sumsq) { free(first); return -1; }
        }
        lrc_chunked_pass job = {pass, arrays, count, first};
        lrc_pool_run(threads, first[count], lrc_pass_chunk, &job);
        if (pass->what == LRC_PASS_SUMSQ) {
            *total = 0.0;
            for (lrc_index c = 0; c < first[count]; c++) *total += pass->sumsq[c];
            free(pass->sumsq);
        }
        free(first);
        return 0;
    }
    if (pass->what != LRC_PASS_SUMSQ) {
        for (lrc_index i = 0; i < count; i++) lrc_pass_piece(pass, &arrays[i], 0);
        return 0;
    }
    double partial;
    pass->sumsq = &partial;
    *total = 0.0;
    for (lrc_index i = 0; i < count; i++)
        for (lrc_index start = 0; start < arrays[i].n; start += LRC_CHUNK) {
            const lrc_index n = arrays[i].n - start < LRC_CHUNK ? arrays[i].n - start : LRC_CHUNK;
            const lrc_array piece = lrc_slice(&arrays[i], start, n);
            lrc_pass_piece(pass, &piece, 0);
            *total += partial;
        }
    pass->sumsq = NULL;
    return 0;
}

/* The update of all arrays (arrays with n == 0, such as those a None gradient skips, are
 * left alone). Returns 0, or -1 when out of memory (nothing written). */
static int lrc_run(lrc_kind kind, const lrc_hyper *h, const lrc_array *arrays, lrc_index count,
                   int threads)
{
    lrc_pass pass = {LRC_PASS_UPDATE, kind, h, 1, NULL};
    return lrc_for_all(&pass, arrays, count, threads, NULL);
}

/* 1 when every gradient is finite, 0 when one is not, -1 when out of memory. */
static int lrc_all_finite(const lrc_array *arrays, lrc_index count, int threads)
{
    lrc_pass pass = {LRC_PASS_FINITE, LRC_SGD, NULL, 1, NULL};
    if (lrc_for_all(&pass, arrays, count, threads, NULL)) return -1;
    return pass.finite;
}

/* The float64 sum of squares of all gradients into *sumsq (chunk partials in chunk order, so
 * the same for any thread count) and, from the same read, 1 when every gradient is finite,
 * 0 when one is not; -1 when out of memory. */
static int lrc_grad_sumsq(const lrc_array *arrays, lrc_index count, int threads, double *sumsq)
{
    lrc_pass pass = {LRC_PASS_SUMSQ, LRC_SGD, NULL, 1, NULL};
    if (lrc_for_all(&pass, arrays, count, threads, sumsq)) return -1;
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
