/* Storage formats: how a value is kept in memory, apart from the type the update computes in.
 *
 * A format is a load (storage -> compute type, exact) and a store (compute type -> storage,
 * round to nearest even). float32 and float64 store themselves. float16 and bfloat16 are kept
 * as their uint16 bit patterns and converted with integer and float operations that every
 * compiler vectorizes on every ISA (SSE2 included): no F16C / AVX-512 BF16 instruction is
 * needed, and the results are defined by these lines, not by the CPU.
 *
 * NaN rule (both half formats): a NaN is stored quieted, its sign and top payload bits kept,
 * as F16C's vcvtps2ph does. Loads are exact bit widenings (a signalling NaN stays one).
 * lrcore/reference.py implements the same rules on bit patterns with numpy.
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

/* The storage formats, numbered as lrcore._validate.FORMATS. */
typedef enum { LRC_FLOAT32 = 0, LRC_FLOAT64 = 1, LRC_FLOAT16 = 2, LRC_BFLOAT16 = 3 } lrc_format;

static inline size_t lrc_format_size(lrc_format f)
{
    return f == LRC_FLOAT64 ? 8 : f == LRC_FLOAT32 ? 4 : 2;
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

#endif /* LRCORE_FORMATS_H */
