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

#include "compact.h"
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
    float *absmax[3];       /* LRC_CODES8 buffers: one float32 per 256-element block */
    lrc_index n;            /* element count */
    lrc_index origin;       /* index in its array of element 0 (pieces of a parallel pass) */
    int64_t step;           /* this array's update count before this update */
    lrc_format pfmt, gfmt, bfmt;    /* params, grads, buffers */
    int stochastic;         /* bit j: bfloat16 buffer slot j rounds stochastically; bit 3: the
                               bfloat16 params (else round to nearest even) */
    uint64_t key[4];        /* stochastic rounding keys of the slots (lrc_rounding_key) */
} lrc_array;

/* SGD momentum modes; nesterov and the first step (which copies the gradient into the
 * buffer, as torch.optim does) are separate loops rather than per-element branches. */
enum { LRC_MOM_NONE, LRC_MOM_FIRST, LRC_MOM_FIRST_NESTEROV, LRC_MOM_HEAVY_BALL, LRC_MOM_NESTEROV };

/* Adam weight-decay modes. */
enum { LRC_WD_NONE, LRC_WD_L2, LRC_WD_DECOUPLED };

/* The storage combinations a step takes (API.md's table):
 *   X(params, grads, buffers)
 * lrcore._validate.COMBINATIONS is the same table for the Python side (a test compares them).
 * Each update rule is written once (kernels_impl.h) and instantiated below for the storage
 * the loops read and write directly; float16 params run the float32 instantiation on blocks
 * (lrc_update). */
#define LRC_COMBOS(X)                                        \
    X(LRC_FLOAT64,  LRC_FLOAT64,  LRC_FLOAT64)               \
    X(LRC_FLOAT32,  LRC_FLOAT32,  LRC_FLOAT32)               \
    X(LRC_FLOAT32,  LRC_FLOAT16,  LRC_FLOAT32)               \
    X(LRC_FLOAT32,  LRC_BFLOAT16, LRC_FLOAT32)               \
    X(LRC_FLOAT16,  LRC_FLOAT16,  LRC_FLOAT16)               \
    X(LRC_BFLOAT16, LRC_BFLOAT16, LRC_BFLOAT16)

/* 1 when buffers of format b may go with params of format p (API.md's compact state):
 * float64 params keep float64 buffers; the others take their own format, float32, bfloat16
 * or 8-bit codes. */
static inline int lrc_state_supported(lrc_format p, lrc_format b)
{
    if (p == LRC_FLOAT64 || b == LRC_FLOAT64) return p == b;
    return b == p || b == LRC_FLOAT32 || b == LRC_BFLOAT16 || b == LRC_CODES8;
}

/* Bit j set: buffer slot j of `kind` is never negative (Adagrad's sum, RMSprop's square_avg,
 * Adam's exp_avg_sq and max_exp_avg_sq), so its 8-bit codes use the unsigned dynamic map;
 * the other slots the signed one (lrcore._validate.UNSIGNED_BUFFERS). */
static inline int lrc_unsigned_slots(lrc_kind kind)
{
    switch (kind) {
    case LRC_ADAGRAD: return 1;
    case LRC_RMSPROP: return 1;
    case LRC_ADAM:    return 2 | 4;
    default:          return 0;
    }
}

/* 1 when a step takes this combination of formats. */
static inline int lrc_combination_supported(lrc_format p, lrc_format g, lrc_format b)
{
#define LRC_SUPPORTED(P, G, B) if (p == P && g == G && b == B) return 1;
    LRC_COMBOS(LRC_SUPPORTED)
#undef LRC_SUPPORTED
    return 0;
}

/* An exact 1.0 that the compiler cannot see through (adam_loop's careful form); volatile,
 * read once per call. */
static volatile double lrc_exact_one = 1.0;

/* The instantiations of kernels_impl.h: float64; float32; float32 params with bfloat16 or
 * float16 grads (widened inside the loop: for bfloat16 a shift, for float16 formats.h's
 * integer widening); bfloat16 params, grads and buffers (converted inside the loop, which
 * the x86-64-v4 / v3 clones vectorize well: 1.3 ns per element at 32M, against 2.2 through
 * scratch blocks). float16 params run the float32 loops on blocks widened by F16C (see
 * lrc_update). */
#define LRC_SAME(x) (x)
#define LRC_REAL double
#define LRC_FABS fabs
#define LRC_BITS uint64_t
#define LRC_SQRT sqrt
#define LRC_NAME(name) name##_f64
#define LRC_P double
#define LRC_G double
#define LRC_B double
#define LRC_LOAD_P LRC_SAME
#define LRC_STORE_P LRC_SAME
#define LRC_LOAD_G LRC_SAME
#define LRC_LOAD_B LRC_SAME
#define LRC_STORE_B LRC_SAME
#define LRC_SPLIT_SCALE 0
#define LRC_GUARD_UNDERFLOW 0
#include "kernels_impl.h"
#undef LRC_GUARD_UNDERFLOW
#undef LRC_SPLIT_SCALE
#undef LRC_FABS
#undef LRC_REAL
#undef LRC_BITS
#undef LRC_SQRT
#undef LRC_NAME
#undef LRC_P
#undef LRC_G
#undef LRC_B

#define LRC_REAL float
#define LRC_FABS fabsf
#define LRC_BITS uint32_t
#define LRC_SQRT sqrtf
#define LRC_P float
#define LRC_B float
#define LRC_NAME(name) name##_f32
#define LRC_G float
#define LRC_SPLIT_SCALE 1
#define LRC_GUARD_UNDERFLOW 1
#include "kernels_impl.h"
#undef LRC_GUARD_UNDERFLOW
#define LRC_GUARD_UNDERFLOW 0
#undef LRC_NAME
#undef LRC_G
#undef LRC_LOAD_G
#define LRC_G uint16_t
#define LRC_NAME(name) name##_f32_gbf16
#define LRC_LOAD_G lrc_load_bf16
#include "kernels_impl.h"
#undef LRC_SPLIT_SCALE
#undef LRC_NAME
#undef LRC_LOAD_G
#define LRC_NAME(name) name##_f32_gf16
#define LRC_LOAD_G lrc_load_f16
#define LRC_SPLIT_SCALE 0
#include "kernels_impl.h"
#undef LRC_SPLIT_SCALE
#undef LRC_NAME
#undef LRC_P
#undef LRC_B
#undef LRC_LOAD_P
#undef LRC_STORE_P
#undef LRC_LOAD_G
#undef LRC_LOAD_B
#undef LRC_STORE_B
#define LRC_NAME(name) name##_bf16
#define LRC_P uint16_t
#define LRC_B uint16_t
#define LRC_LOAD_P lrc_load_bf16
#define LRC_STORE_P lrc_store_bf16
#define LRC_LOAD_G lrc_load_bf16
#define LRC_LOAD_B lrc_load_bf16
#define LRC_STORE_B lrc_store_bf16
#define LRC_SPLIT_SCALE 1
#include "kernels_impl.h"
#undef LRC_SPLIT_SCALE
#undef LRC_NAME
#undef LRC_P
#undef LRC_G
#undef LRC_B
#undef LRC_LOAD_P
#undef LRC_STORE_P
#undef LRC_LOAD_G
#undef LRC_LOAD_B
#undef LRC_STORE_B
#undef LRC_GUARD_UNDERFLOW
#undef LRC_REAL
#undef LRC_FABS
#undef LRC_BITS
#undef LRC_SQRT
#undef LRC_SAME

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

/* Runtime ISA dispatch: the update and gradient passes below are written once (always-inline
 * bodies) and compiled three times on x86-64 with GCC or clang, under the target attributes of
 * the vector levels of formats.h: portable (the compiler's baseline: SSE2), avx2 (AVX2, FMA,
 * F16C, BMI1/2: x86-64-v3) and avx512f (plus AVX-512 F/BW/DQ/VL: x86-64-v4; the 16-bit
 * conversions vectorize with vpmovdw on 256-bit vectors). The level in use, the best the CPU
 * runs (or one a test selects), picks the version through a table of function pointers, so
 * the default build stays portable (no -march=native), needs no ifunc (macOS, musl), and a
 * test can run every version on one machine. Every version performs the same IEEE operations
 * (-ffp-contract=off: no FMA contraction), so results are bit-identical on every level; the
 * avx512f version alone runs Adam's underflow guard (kernels_impl.h), whose careful form gives
 * the same bits (at the other levels its test of each block cost 35-45 % in cache).
 * Elsewhere (aarch64, where the baseline includes NEON; MSVC) there is one version, the
 * compiler's baseline vectorization. */
#if LRC_X86_CONVERSIONS
#define LRC_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi,bmi2")))
#define LRC_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2")))
#endif

/* Elements [start, start + count) of an array, as an array of its own; start is a multiple
 * of LRC_Q8_BLOCK (chunks and blocks are), so 8-bit blocks stay whole. */
static inline lrc_array lrc_slice(const lrc_array *a, lrc_index start, lrc_index count)
{
    const size_t psize = lrc_format_size(a->pfmt), bsize = lrc_format_size(a->bfmt);
    lrc_array s = *a;
    s.param = (char *)a->param + start * psize;
    s.grad = (const char *)a->grad + start * lrc_format_size(a->gfmt);
    for (int j = 0; j < 3; j++) {
        if (a->buf[j]) s.buf[j] = (char *)a->buf[j] + start * bsize;
        if (a->absmax[j]) s.absmax[j] = a->absmax[j] + start / LRC_Q8_BLOCK;
    }
    s.n = count;
    s.origin = a->origin + start;
    return s;
}

/* Per-array scalars of an update, from the array's own update number t = step + 1: SGD's
 * momentum mode, Adagrad's decayed rate, Adam's bias corrections. Computed once per array,
 * in double, from the exact integers step and step + 1 each rounded once to double, as the
 * reference's Python ints are (they differ from (double)step + 1.0 at step >= 2**53).
 * step + 1 cannot overflow: a step at step == INT64_MAX is refused before any kernel runs. */
typedef struct { int sgd_mode; double clr, step_size, inv_bc2_sqrt; } lrc_scalars;

static lrc_scalars lrc_array_scalars(lrc_kind kind, const lrc_hyper *h, int64_t step)
{
    lrc_scalars s = {0, 0.0, 0.0, 0.0};
    const double t = (double)(step + 1);
    if (kind == LRC_SGD) s.sgd_mode = lrc_sgd_mode(h, step);
    if (kind == LRC_ADAGRAD) s.clr = h->lr / (1.0 + (double)step * h->lr_decay);
    if (kind == LRC_ADAM) {
        s.step_size = h->lr / (1.0 - pow(h->beta1, t));
        s.inv_bc2_sqrt = 1.0 / sqrt(1.0 - pow(h->beta2, t));
    }
    return s;
}

/* lrc_loops_SFX: the update of `kind` by the loops of instantiation SFX (its storage types). */
#define LRC_LOOPS(sfx, P, G, B)                                                            \
    LRC_ALWAYS_INLINE void lrc_loops_##sfx(lrc_kind kind, const lrc_hyper *h,              \
                                           const lrc_scalars *s, P *p, const G *g, B *b0,  \
                                           B *b1, B *b2, lrc_index n, const int guard)     \
    {                                                                                      \
        switch (kind) {                                                                    \
        case LRC_SGD: sgd_##sfx(p, g, b0, b1, b2, n, h, s->sgd_mode); break;               \
        case LRC_ADAGRAD: adagrad_##sfx(p, g, b0, b1, b2, n, h, s->clr); break;            \
        case LRC_RMSPROP: rmsprop_##sfx(p, g, b0, b1, b2, n, h); break;                    \
        case LRC_ADAM:                                                                     \
            adam_##sfx(p, g, b0, b1, b2, n, h, s->step_size, s->inv_bc2_sqrt, guard); break; \
        }                                                                                  \
    }
LRC_LOOPS(f64, double, double, double)
LRC_LOOPS(f32, float, float, float)
LRC_LOOPS(f32_gbf16, float, uint16_t, float)
LRC_LOOPS(f32_gf16, float, uint16_t, float)
LRC_LOOPS(bf16, uint16_t, uint16_t, uint16_t)
#undef LRC_LOOPS

/* Elements per block of the blocked path: five float32 scratch blocks (param, grad, three
 * buffers) fit in L1; a multiple of LRC_Q8_BLOCK, so 8-bit blocks are never cut. */
#define LRC_BLOCK 512

#if defined(__GNUC__) || defined(__clang__)
#define LRC_PREFETCH(address, write) __builtin_prefetch((address), (write), 3)
#else
#define LRC_PREFETCH(address, write) ((void)(address))
#endif

/* Ask for the memory of the block at element `start` (at most LRC_BLOCK elements) while the
 * current one is computed: the blocked path alternates between reading a block and computing
 * on it, and without this the reads of one block do not overlap the arithmetic of the last
 * (measured: bfloat16 Adam at 32M elements 2.96 -> 1.93 ns per element, one thread). */
static inline void lrc_prefetch_block(const lrc_array *a, lrc_index start)
{
    const lrc_index n = a->n - start < LRC_BLOCK ? a->n - start : LRC_BLOCK;
    const lrc_array next = lrc_slice(a, start, n);
    const lrc_index pbytes = n * (lrc_index)lrc_format_size(a->pfmt);
    const lrc_index gbytes = n * (lrc_index)lrc_format_size(a->gfmt);
    const lrc_index bbytes = n * (lrc_index)lrc_format_size(a->bfmt);
    for (lrc_index o = 0; o < pbytes; o += 64) LRC_PREFETCH((const char *)next.param + o, 1);
    for (lrc_index o = 0; o < gbytes; o += 64) LRC_PREFETCH((const char *)next.grad + o, 0);
    for (int j = 0; j < 3; j++)
        if (next.buf[j])
            for (lrc_index o = 0; o < bbytes; o += 64) LRC_PREFETCH((const char *)next.buf[j] + o, 1);
}


/* One optimizer update of one array, in the runtime-dispatched ISA version. The combinations
 * with an instantiation of their own (float64, float32, bfloat16, float32 with half grads),
 * rounding to nearest, run it on their memory. The others (float16 params; compact state:
 * float32, bfloat16 or 8-bit buffers beside other params; stochastic rounding) run the float32
 * loops block by block: each operand not stored as float32 is decoded into float32 scratch
 * (widened exactly, or 8-bit codes dequantized 256 at a time), float32 operands are used in
 * place, and the written ones are stored back: half formats rounded to nearest even or
 * stochastically, 8-bit blocks requantized with their new absmax (compact.h). So the
 * arithmetic is that of float32 params, done once per element, and the update's new buffer
 * values (not their stored approximations) update the params, as bitsandbytes does. */
LRC_ALWAYS_INLINE void lrc_update_body(lrc_kind kind, const lrc_hyper *h, const lrc_array *a,
                                       const int guard)
{
    const lrc_scalars scalars = lrc_array_scalars(kind, h, a->step);
    if (a->pfmt == LRC_FLOAT64) {
        lrc_loops_f64(kind, h, &scalars, (double *)a->param, (const double *)a->grad,
                      (double *)a->buf[0], (double *)a->buf[1], (double *)a->buf[2], a->n,
                      guard);
        return;
    }
    if (a->pfmt == LRC_FLOAT32 && a->gfmt == LRC_FLOAT32 && a->bfmt == LRC_FLOAT32) {
        lrc_loops_f32(kind, h, &scalars, (float *)a->param, (const float *)a->grad,
                      (float *)a->buf[0], (float *)a->buf[1], (float *)a->buf[2], a->n,
                      guard);
        return;
    }
    if (a->pfmt == LRC_BFLOAT16 && a->gfmt == LRC_BFLOAT16 && a->bfmt == LRC_BFLOAT16
        && !a->stochastic) {
        lrc_loops_bf16(kind, h, &scalars, (uint16_t *)a->param, (const uint16_t *)a->grad,
                       (uint16_t *)a->buf[0], (uint16_t *)a->buf[1], (uint16_t *)a->buf[2],
                       a->n, guard);
        return;
    }
    if (a->pfmt == LRC_FLOAT32 && a->bfmt == LRC_FLOAT32) {    /* half-precision grads */
        if (a->gfmt == LRC_BFLOAT16)
            lrc_loops_f32_gbf16(kind, h, &scalars, (float *)a->param, (const uint16_t *)a->grad,
                                (float *)a->buf[0], (float *)a->buf[1], (float *)a->buf[2], a->n,
                                guard);
        else
            lrc_loops_f32_gf16(kind, h, &scalars, (float *)a->param, (const uint16_t *)a->grad,
                               (float *)a->buf[0], (float *)a->buf[1], (float *)a->buf[2], a->n,
                               guard);
        return;
    }
    float scratch[5][LRC_BLOCK];
    const int wide_p = a->pfmt == LRC_FLOAT32, wide_g = a->gfmt == LRC_FLOAT32;
    const int wide_b = a->bfmt == LRC_FLOAT32, codes = a->bfmt == LRC_CODES8;
    const int unsigned_slots = lrc_unsigned_slots(kind);
    const int round_p = a->pfmt == LRC_BFLOAT16 && (a->stochastic >> 3 & 1);
    const int round_b = a->bfmt == LRC_BFLOAT16 ? a->stochastic & 7 : 0;
    const lrc_conversions *cp = lrc_conversions_of(a->pfmt), *cg = lrc_conversions_of(a->gfmt);
    const lrc_conversions *cb = lrc_conversions_of(a->bfmt);
    /* the guard's test of each block's grads, a pass of its own over the <= LRC_BLOCK grads in
     * scratch, cost 3-13 % with float16 params (2M elements, 1 thread, against a build without
     * it); float16 grads (6e-8 and above) are tiny only under a grad factor below 1e-10, and
     * go without the guard, as in lrc_loops_f32_gf16 */
    const int guard_blocks = guard && a->gfmt != LRC_FLOAT16;
    for (lrc_index start = 0; start < a->n; start += LRC_BLOCK) {
        const lrc_index n = a->n - start < LRC_BLOCK ? a->n - start : LRC_BLOCK;
        const lrc_array blk = lrc_slice(a, start, n);
        if (start + LRC_BLOCK < a->n) lrc_prefetch_block(a, start + LRC_BLOCK);
        float *p = wide_p ? (float *)blk.param : scratch[0];
        const float *g = wide_g ? (const float *)blk.grad : scratch[1];
        float *b[3];
        if (!wide_p) cp->widen((const uint16_t *)blk.param, scratch[0], n);
        if (!wide_g) cg->widen((const uint16_t *)blk.grad, scratch[1], n);
        for (int j = 0; j < 3; j++) {
            b[j] = !blk.buf[j] ? NULL : wide_b ? (float *)blk.buf[j] : scratch[2 + j];
            if (!blk.buf[j] || wide_b) continue;
            if (codes)
                lrc_q8_dequantize_blocks((const uint8_t *)blk.buf[j], blk.absmax[j],
                                         unsigned_slots >> j & 1, scratch[2 + j], n);
            else
                cb->widen((const uint16_t *)blk.buf[j], scratch[2 + j], n);
        }
        lrc_loops_f32(kind, h, &scalars, p, g, b[0], b[1], b[2], n, guard_blocks);
        if (round_p)
            lrc_round_bf16_stochastic(scratch[0], (uint16_t *)blk.param, n, blk.key[3], blk.origin);
        else if (!wide_p)
            cp->round(scratch[0], (uint16_t *)blk.param, n);
        for (int j = 0; j < 3; j++) {
            if (!blk.buf[j] || wide_b) continue;
            if (codes)
                lrc_q8_quantize_blocks(scratch[2 + j], unsigned_slots >> j & 1,
                                       (uint8_t *)blk.buf[j], blk.absmax[j], n);
            else if (round_b >> j & 1)
                lrc_round_bf16_stochastic(scratch[2 + j], (uint16_t *)blk.buf[j], n, blk.key[j],
                                          blk.origin);
            else
                cb->round(scratch[2 + j], (uint16_t *)blk.buf[j], n);
        }
    }
}

/* Parallel work items are chunks of this many elements (a multiple of every vector width);
 * a call with fewer than LRC_PARALLEL_MIN elements in all runs on the calling thread. */
#define LRC_CHUNK ((lrc_index)32768)
#define LRC_PARALLEL_MIN (2 * LRC_CHUNK)

/* 1 when every gradient element of the array is finite: its exponent bits are not all ones
 * (an integer test, so half formats need no conversion); an OR over the comparison
 * vectorizes. */
LRC_ALWAYS_INLINE int lrc_grad_finite_body(const lrc_array *a)
{
    unsigned bad = 0;
#define LRC_EXPONENT_ALL_ONES(T, mask)                                                     \
    {                                                                                      \
        const T *LRC_RESTRICT g = (const T *)a->grad;                                      \
        for (lrc_index i = 0; i < a->n; i++) bad |= (g[i] & (mask)) == (mask);             \
    }
    switch (a->gfmt) {
    case LRC_FLOAT32:  LRC_EXPONENT_ALL_ONES(uint32_t, 0x7f800000u) break;
    case LRC_FLOAT64:  LRC_EXPONENT_ALL_ONES(uint64_t, 0x7ff0000000000000u) break;
    case LRC_FLOAT16:  LRC_EXPONENT_ALL_ONES(uint16_t, 0x7c00u) break;
    case LRC_BFLOAT16: LRC_EXPONENT_ALL_ONES(uint16_t, 0x7f80u) break;
    case LRC_CODES8: break;             /* a state format, never a gradient's */
    }
#undef LRC_EXPONENT_ALL_ONES
    return !bad;
}

/* The sum of squares of a piece of gradient (at most one chunk) in float64, in the order
 * API.md fixes so that the norm does not depend on threads or ISA: element i adds its square
 * to lane i mod LRC_LANES (each lane in element order), then the lanes are summed pairwise
 * (lane j + lane j + 8, then + 4, + 2, + 1). lrcore/reference.py's grad_sumsq does the
 * same with numpy. *bad is set when an element is not finite. */
#define LRC_LANES 16

/* acc[i mod LRC_LANES] += x[i]² over n elements (x a float or double array), from lane 0. */
#define LRC_SUMSQ_LANES(x, n, acc)                                                          \
    do {                                                                                   \
        const lrc_index body_ = (n) - (n) % LRC_LANES;                                     \
        for (lrc_index i = 0; i < body_; i += LRC_LANES)                                   \
            for (int j = 0; j < LRC_LANES; j++) {                                          \
                const double v = (double)(x)[i + j];                                       \
                (acc)[j] += v * v;                                                         \
            }                                                                              \
        for (lrc_index i = body_; i < (n); i++) {                                          \
            const double v = (double)(x)[i];                                               \
            (acc)[i - body_] += v * v;                                                     \
        }                                                                                  \
    } while (0)

LRC_ALWAYS_INLINE double lrc_grad_sumsq_body(const lrc_array *a, int *bad)
{
    double acc[LRC_LANES] = {0};
    int nonfinite = 0;
    switch (a->gfmt) {
    case LRC_FLOAT32:
        LRC_SUMSQ_LANES((const float *)a->grad, a->n, acc);
        break;
    case LRC_FLOAT64:
        LRC_SUMSQ_LANES((const double *)a->grad, a->n, acc);
        nonfinite = !lrc_grad_finite_body(a);
        break;
    case LRC_FLOAT16:
    case LRC_BFLOAT16: {
        /* widened a block at a time (LRC_BLOCK is a multiple of LRC_LANES, so every element
         * keeps its lane) */
        float scratch[LRC_BLOCK];
        const lrc_conversions *c = lrc_conversions_of(a->gfmt);
        for (lrc_index start = 0; start < a->n; start += LRC_BLOCK) {
            const lrc_index n = a->n - start < LRC_BLOCK ? a->n - start : LRC_BLOCK;
            c->widen((const uint16_t *)a->grad + start, scratch, n);
            LRC_SUMSQ_LANES(scratch, n, acc);
        }
        break;
    }
    case LRC_CODES8: break;
    }
    for (int width = LRC_LANES / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) acc[j] = acc[j] + acc[j + width];
    /* float32 and half-precision squares cannot overflow float64: their sum is finite exactly
     * when every element is; float64 elements are tested by their exponent bits */
    if (nonfinite || (a->gfmt != LRC_FLOAT64 && !(acc[0] - acc[0] == 0.0))) *bad = 1;
    return acc[0];
}

/* The per-level versions of the three bodies, and the table the passes call them through. */
typedef struct {
    void (*update)(lrc_kind kind, const lrc_hyper *h, const lrc_array *a);
    int (*grad_finite)(const lrc_array *a);
    double (*grad_sumsq)(const lrc_array *a, int *bad);
} lrc_level_fns;

#define LRC_LEVEL_FNS(sfx, target, guard)                                                   \
    target static void lrc_update_##sfx(lrc_kind kind, const lrc_hyper *h, const lrc_array *a) \
    { lrc_update_body(kind, h, a, guard); }                                                 \
    target static int lrc_grad_finite_##sfx(const lrc_array *a)                            \
    { return lrc_grad_finite_body(a); }                                                     \
    target static double lrc_grad_sumsq_##sfx(const lrc_array *a, int *bad)                \
    { return lrc_grad_sumsq_body(a, bad); }
#define LRC_LEVEL_ENTRY(sfx) {lrc_update_##sfx, lrc_grad_finite_##sfx, lrc_grad_sumsq_##sfx}
LRC_LEVEL_FNS(portable, , 0)
#if LRC_X86_CONVERSIONS
LRC_LEVEL_FNS(avx2, LRC_TARGET_AVX2, 0)
LRC_LEVEL_FNS(avx512, LRC_TARGET_AVX512, 1)
static const lrc_level_fns lrc_level_table[3] = {
    LRC_LEVEL_ENTRY(portable), LRC_LEVEL_ENTRY(avx2), LRC_LEVEL_ENTRY(avx512)};
#define LRC_ISA_COMPILED "x86-64-v4,x86-64-v3,default"
static const char *const lrc_isa_names[3] = {"default", "x86-64-v3", "x86-64-v4"};
#else
static const lrc_level_fns lrc_level_table[1] = {LRC_LEVEL_ENTRY(portable)};
#define LRC_ISA_COMPILED "default"
static const char *const lrc_isa_names[1] = {"default"};
#endif
#undef LRC_LEVEL_ENTRY
#undef LRC_LEVEL_FNS

/* The versions of the level in use (formats.h's lrc_conversion_in_use). */
static inline const lrc_level_fns *lrc_level(void) { return &lrc_level_table[lrc_conversion_in_use()]; }
static inline const char *lrc_isa_dispatched(void) { return lrc_isa_names[lrc_conversion_in_use()]; }

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
        lrc_level()->update(pass->kind, pass->h, piece);
        break;
    case LRC_PASS_FINITE:
        if (!lrc_level()->grad_finite(piece)) lrc_clear_finite(pass);
        break;
    case LRC_PASS_SUMSQ:
        pass->sumsq[chunk] = lrc_level()->grad_sumsq(piece, &bad);
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
