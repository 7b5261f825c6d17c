/* Storage formats: how a value is kept in memory, apart from the type the update computes in.
 *
 * A format is a load (storage -> float32, exact) and a store (float32 -> storage, round to
 * nearest even). float16 and bfloat16 are kept as their uint16 bit patterns. The update loops
 * apply them element by element (bfloat16 params, half-precision grads), or the kernels widen
 * blocks of float16 params and buffers into float32 scratch with the block conversions below,
 * run the float32 update on it and round the written blocks back (kernels.h).
 *
 * NaN rule (both half formats): a NaN is stored quieted, its sign and top payload bits kept.
 * A load widens exactly, but for float16 on F16C hardware a signalling NaN comes out quieted;
 * every loaded value reaches storage through an operation or a store that quiets it anyway,
 * so the stored bits are the same either way. lrcore/reference.py implements the same rules
 * on bit patterns with numpy.
 *
 * The scalar conversions below are the definition; on x86 with F16C (every AVX2 CPU), float16
 * blocks use vcvtph2ps / vcvtps2ph, which give the same bits (checked over every float16 and
 * a sweep of float32 patterns by tests/test_formats.py through the kernels).
 */
#ifndef LRCORE_FORMATS_H
#define LRCORE_FORMATS_H

#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER)
#define LRC_ALWAYS_INLINE static __forceinline
#else
#define LRC_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

/* The storage formats, numbered as lrcore._validate.BUFFER_FORMATS. LRC_CODES8 is for
 * optimizer state only: uint8 codes of block-wise dynamic quantization, each 256-element
 * block with a float32 absmax beside (compact.h). */
typedef enum {
    LRC_FLOAT32 = 0, LRC_FLOAT64 = 1, LRC_FLOAT16 = 2, LRC_BFLOAT16 = 3, LRC_CODES8 = 4
} lrc_format;

/* Bytes per element (per code for LRC_CODES8; the absmax is apart). */
static inline size_t lrc_format_size(lrc_format f)
{
    return f == LRC_FLOAT64 ? 8 : f == LRC_FLOAT32 ? 4 : f == LRC_CODES8 ? 1 : 2;
}

LRC_ALWAYS_INLINE float lrc_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
LRC_ALWAYS_INLINE uint32_t lrc_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* bfloat16 is the top half of a float32. */
LRC_ALWAYS_INLINE float lrc_load_bf16(uint16_t b) { return lrc_bits_f32((uint32_t)b << 16); }

LRC_ALWAYS_INLINE uint16_t lrc_store_bf16(float f)
{
    const uint32_t u = lrc_f32_bits(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   /* ties to even */
    const uint32_t nan = (u >> 16) | 0x40u;                             /* quieted */
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

/* float16 -> float32, exact: rebias the exponent; inf/NaN keep an all-ones exponent;
 * subnormals are normalized by a float subtraction (exact). */
LRC_ALWAYS_INLINE float lrc_load_f16(uint16_t h)
{
    const uint32_t shifted = (uint32_t)(h & 0x7fffu) << 13;
    const uint32_t exp = shifted & (0x7c00u << 13);
    const uint32_t normal = shifted + ((127u - 15u) << 23);
    const uint32_t special = normal + ((128u - 16u) << 23);
    const float sub = lrc_bits_f32(normal + (1u << 23)) - lrc_bits_f32(113u << 23);
    const uint32_t mag = exp == (0x7c00u << 13) ? special
                       : exp == 0 ? lrc_f32_bits(sub) : normal;
    return lrc_bits_f32(mag | ((uint32_t)(h & 0x8000u) << 16));
}

/* float32 -> float16, round to nearest even; overflow to inf; subnormals rounded by adding
 * a magic float whose ulp is the float16 subnormal step (the FPU rounds to even). */
LRC_ALWAYS_INLINE uint16_t lrc_store_f16(float f)
{
    const uint32_t u = lrc_f32_bits(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t a = u & 0x7fffffffu;
    const uint32_t special = a > 0x7f800000u ? 0x7e00u | ((a >> 13) & 0x3ffu) : 0x7c00u;
    const float magic = lrc_bits_f32(((127u - 15u) + (23u - 10u) + 1u) << 23);
    const uint32_t sub = lrc_f32_bits(lrc_bits_f32(a) + magic) - lrc_f32_bits(magic);
    const uint32_t normal = (a + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
    const uint32_t mag = a >= ((127u + 16u) << 23) ? special      /* >= 65536: inf or NaN */
                       : a < (113u << 23) ? sub : normal;         /* below 2**-14: subnormal */
    return (uint16_t)(mag | sign);
}

/* Block conversions: n elements of a half format widened into float32, or float32 rounded
 * into a half format. The portable loops apply the scalar definitions above (compilers
 * vectorize them; bfloat16's are a shift and a few integer operations, and bfloat16 params
 * are converted inside the update loops anyway). float16 has hand-vectorized F16C (AVX2)
 * and AVX-512 versions on x86-64, chosen once at run time: they round to nearest even and
 * quiet NaNs keeping the top payload bits, as lrc_store_f16 (tests/test_formats.py checks
 * every float16 pattern through the kernels at every level). */
typedef void (*lrc_widen_fn)(const uint16_t *src, float *dst, ptrdiff_t n);
typedef void (*lrc_round_fn)(const float *src, uint16_t *dst, ptrdiff_t n);

static void lrc_widen_bf16_portable(const uint16_t *src, float *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = lrc_load_bf16(src[i]);
}
static void lrc_round_bf16_portable(const float *src, uint16_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = lrc_store_bf16(src[i]);
}
static void lrc_widen_f16_portable(const uint16_t *src, float *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = lrc_load_f16(src[i]);
}
static void lrc_round_f16_portable(const float *src, uint16_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = lrc_store_f16(src[i]);
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(LRC_NO_DISPATCH)
#define LRC_X86_CONVERSIONS 1
#include <immintrin.h>

#define LRC_AVX2 __attribute__((target("avx2,f16c")))
#define LRC_AVX512 __attribute__((target("avx512f")))

LRC_AVX2 static void lrc_widen_f16_avx2(const uint16_t *src, float *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    lrc_widen_f16_portable(src + i, dst + i, n - i);
}

LRC_AVX2 static void lrc_round_f16_avx2(const float *src, uint16_t *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    lrc_round_f16_portable(src + i, dst + i, n - i);
}

LRC_AVX512 static void lrc_widen_f16_avx512(const uint16_t *src, float *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i,
                         _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    lrc_widen_f16_portable(src + i, dst + i, n - i);
}

LRC_AVX512 static void lrc_round_f16_avx512(const float *src, uint16_t *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    lrc_round_f16_portable(src + i, dst + i, n - i);
}
#undef LRC_AVX2
#undef LRC_AVX512
#else
#define LRC_X86_CONVERSIONS 0
#endif

/* The conversions of one half format. */
typedef struct { lrc_widen_fn widen; lrc_round_fn round; } lrc_conversions;

/* The vector levels, each a row of lrc_conversion_table: [level][0] bfloat16, [1] float16. The
 * level in use also picks compact.h's versions (8-bit quantization, stochastic rounding). */
enum { LRC_CONVERT_PORTABLE = 0, LRC_CONVERT_AVX2 = 1, LRC_CONVERT_AVX512 = 2 };
static const char *const lrc_conversion_names[3] = {"portable", "avx2", "avx512f"};

#if LRC_X86_CONVERSIONS
static const lrc_conversions lrc_conversion_table[3][2] = {
    {{lrc_widen_bf16_portable, lrc_round_bf16_portable},
     {lrc_widen_f16_portable, lrc_round_f16_portable}},
    {{lrc_widen_bf16_portable, lrc_round_bf16_portable},
     {lrc_widen_f16_avx2, lrc_round_f16_avx2}},
    {{lrc_widen_bf16_portable, lrc_round_bf16_portable},
     {lrc_widen_f16_avx512, lrc_round_f16_avx512}},
};

/* The best level this CPU and its OS run, read with cpuid and xgetbv (the same code under GCC
 * and clang, whose __builtin_cpu_supports know different feature names):
 *   avx2:    AVX2, FMA, F16C, BMI1, BMI2, with the OS saving YMM state;
 *   avx512f: that and AVX-512 F, BW, DQ, VL, with the OS saving the opmask and ZMM state.
 * These are the features the update loops of each level are compiled for (kernels.h). */
#include <cpuid.h>

static int lrc_conversion_best(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LRC_CONVERT_PORTABLE;
    const int osxsave = c >> 27 & 1, avx = c >> 28 & 1, f16c = c >> 29 & 1, fma = c >> 12 & 1;
    if (!(osxsave && avx && f16c && fma) || __get_cpuid_max(0, NULL) < 7)
        return LRC_CONVERT_PORTABLE;
    unsigned xcr0, xcr0_high;
    __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = b >> 5 & 1, bmi1 = b >> 3 & 1, bmi2 = b >> 8 & 1;
    if ((xcr0 & 0x6) != 0x6 || !(avx2 && bmi1 && bmi2)) return LRC_CONVERT_PORTABLE;
    const int avx512 = (b >> 16 & 1) && (b >> 17 & 1) && (b >> 30 & 1) && (b >> 31 & 1);
    return avx512 && (xcr0 & 0xe0) == 0xe0 ? LRC_CONVERT_AVX512 : LRC_CONVERT_AVX2;
}
#else
static const lrc_conversions lrc_conversion_table[1][2] = {
    {{lrc_widen_bf16_portable, lrc_round_bf16_portable},
     {lrc_widen_f16_portable, lrc_round_f16_portable}},
};

static int lrc_conversion_best(void) { return LRC_CONVERT_PORTABLE; }
#endif

/* The vector level in use (for the half conversions here and compact.h's primitives): the
 * best the CPU runs, chosen at the first use (racing first uses store the same value), or one
 * set by lrc_set_conversion_level. */
static int lrc_conversion_level = -1;

static inline int lrc_conversion_in_use(void)
{
    if (lrc_conversion_level < 0) lrc_conversion_level = lrc_conversion_best();
    return lrc_conversion_level;
}

/* Use `level` (a lower one than the best lets tests run every version on one machine);
 * -1 restores the best. Returns 0, or -1 when this CPU or build cannot run it. */
static inline int lrc_set_conversion_level(int level)
{
    if (level > lrc_conversion_best()) return -1;
    lrc_conversion_level = level < 0 ? lrc_conversion_best() : level;
    return 0;
}

/* The conversions of half format f (LRC_BFLOAT16 or LRC_FLOAT16). */
static inline const lrc_conversions *lrc_conversions_of(lrc_format f)
{
    return &lrc_conversion_table[lrc_conversion_in_use()][f == LRC_FLOAT16];
}

#endif /* LRCORE_FORMATS_H */
