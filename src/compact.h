/* Compact optimizer state (issue 13): the block primitives of the 8-bit and bfloat16 state.
 *
 * The exact rules are COMPACT_SPEC.md's; lrcore's numpy reference implements the same ones and
 * the two must agree bit for bit (tests/test_compact_kernels.py checks these primitives against
 * an independent numpy implementation, at every vector level this CPU runs).
 *
 * 8-bit block-wise dynamic quantization (bitsandbytes' blockwise 8-bit optimizer state), one
 * block of at most LRC_Q8_BLOCK = 256 elements at a time:
 *   quantize:   absmax = the float32 whose pattern is max_i (bits(x_i) & 0x7fffffff) (a NaN wins;
 *               -0 counts as 0); n_i = x_i * (1.0f / absmax) (float32 division, then multiply);
 *               code_i = #{c : t_c < n_i}, t_c = (map[c] + map[c+1]) / 2 exact in float64, i.e.
 *               the nearest map entry with ties to the lower index; n_i NaN -> the zero code.
 *   dequantize: x_i = map[code_i] * absmax (float32 multiply).
 * So an all-zero block stores zero codes and absmax 0 (0 * inf is NaN -> zero code); a NaN makes
 * absmax NaN and the block decodes to NaN; an inf (no NaN) makes absmax inf, every n_i ±0 or NaN
 * (zero codes) and the block decodes to NaN (0 * inf).
 *
 * The nearest code, exactly. Two methods, checked against each other by the tests:
 *
 * 1. Bucket tables (the portable level, and the exact fallback of the vector levels). Thresholds
 *    are compared on the float32's ordered key, key(u) = u for u >= 0 and -1 - (u & 0x7fffffff)
 *    for a negative pattern u (monotone in the value). With F_c the key of the smallest float32
 *    above t_c, code(n) = #{c : F_c <= key(n)}. A table covers the magnitudes [LO, HI] that hold
 *    every threshold, in buckets of 2**S patterns (S chosen so that no bucket holds two F_c:
 *    checked when the tables are built), one half per sign for the signed map. The clamped
 *    magnitude's bucket gives the entry base | G << 8 (base: the code at the bucket's lowest key;
 *    G: the last key offset in the bucket with that code, 0xffffff: all), and code = base +
 *    (offset > G), the offset being the low S bits of the magnitude, inverted for a negative value
 *    (the key runs backwards through a negative bucket). NaN is tested apart.
 *      signed map:   LO = 2**-22, HI = 1.0, S = 17: 2 x 1409 entries, 11,272 bytes;
 *      unsigned map: LO = 2**-23, HI = 1.0, S = 16 (its top decade holds 128 entries: two
 *                    thresholds would share a 17-bit bucket in [0.5, 1)); a negative pattern
 *                    clamps to LO (code 0): 2945 entries, 11,780 bytes.
 *    One table load per element, but a vector version needs a gather, and gathers are slow on
 *    CPUs with the Gather Data Sampling microcode mitigation (Intel Skylake to Ice Lake: ~23
 *    cycles per 16-lane gather measured on the Cascade Lake this was written on).
 *
 * 2. Regions (the AVX2 and AVX-512 levels: no gathers). The map is 0, seven "decades" of means of
 *    a float32 linspace (signed: 1, 2, ..., 64 entries in [10**(d-7), 10**(d-6)); unsigned: 2, ...,
 *    128), and 1.0 (mirrored for the signed map's negatives). So the positive magnitudes split at
 *    8 boundary thresholds (0 | decades | 1.0) into 9 regions, and inside a region the thresholds
 *    are equally spaced up to float32 rounding: a line y = a * K_r + O_r (a = |n|) puts them at
 *    the integers (to within 1.6e-5; ~0 but in the unsigned top decade), so the code is floor(y),
 *    clamped to the region's last code hi_r (past its last entry, y overshoots by up to 1.5). In
 *    fixed point, one FMA and one truncation give it all: Y = trunc(4096 y - 1), code =
 *    min(Y >> 12, hi_r), and the lane is ambiguous when y is within 2**-12 of an integer
 *    ((Y + 2) & 4094 == 0: ~1 lane in 2000 of random data). The region is the number of
 *    boundaries F*_k <= a (exact integer compares; per binade of a, a 32-entry permute gives the
 *    region at the binade's start and the one boundary inside it). A lane just below a boundary
 *    (a + 1 == F*: a possible tie) is ambiguous too for the signed map, whose negatives take the
 *    mirrored code 254 - code(|n|) (exact but at a tie). Ambiguous lanes are redone by method 1.
 *    When the tables are built, every threshold is checked: with z computed fused and unfused (the
 *    AVX2 level multiplies, then adds), the code on either side of it is right or the lane
 *    ambiguous (and a representable threshold, a possible tie, ambiguous), and each region starts
 *    right. Blocks where n can be ±inf or NaN (1 / absmax = inf; absmax NaN, 0 or inf) are done by
 *    method 1 or set to zero codes whole, so the region path sees finite |n| <= 1 + 2**-23.
 *    About 25 vector instructions per 16 lanes (17 unsigned), against a gather plus ~12.
 *
 * Dequantize: a 256-entry lookup. AVX-512 does it in registers: the unsigned map by eight
 * 32-entry vpermt2ps on the code's low 5 bits and a blend tree on its top 3, the signed map by
 * four on |code - 127| (its negatives are its positives negated) and the sign. AVX2's permutes
 * take 8 entries, so its level uses the portable loop.
 *
 * Blocks: lrc_q8_quantize / lrc_q8_dequantize take one block; lrc_q8_quantize_blocks /
 * lrc_q8_dequantize_blocks any number (the next block's absmax is taken ahead, so its dependent
 * chain overlaps this block's codes).
 *
 * Measured on this Cascade Lake (one thread, 32M elements; in L1: one 256 / 512-element block
 * over and over), AVX-512 level, ns per element: quantize 0.97 signed / 0.87 unsigned (in L1
 * 0.51 / 0.40 through quantize_blocks), dequantize 0.58 / 0.66 (in L1 0.32 / 0.33), stochastic
 * rounding 0.68 (in L1 0.33); a float32 memcpy is 0.8.
 *
 * Stochastic rounding float32 -> bfloat16 (reproducible): element e of an array rounds with the
 * 16 random bits r = lowbias32((uint32)e ^ (uint32)splitmix64(key ^ (e >> 32))) >> 16, as
 * (bits + r) >> 16 (NaN: quieted top half); key = lrc_rounding_key(seed, step, array, slot).
 *
 * Vector levels: each primitive has a portable C version and, on x86-64 with GCC or clang, AVX2
 * and AVX-512F versions; they give the same bits. The level in use is formats.h's vector level
 * (lrc_conversion_in_use), so _kernels.set_vector_level(level) switches these too. Tables are
 * built and checked once (lrc_q8_init; the extension calls it at import and refuses to load if a
 * check fails).
 */
#ifndef LRCORE_COMPACT_H
#define LRCORE_COMPACT_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>

#include "formats.h"

#define LRC_Q8_BLOCK 256

/* The zero codes: map[127] of the signed map and map[0] of the unsigned one are 0. */
#define LRC_Q8_ZERO_SIGNED 127u
#define LRC_Q8_ZERO_UNSIGNED 0u

/* The two dynamic maps as float32 bit patterns, ascending: [0] signed, [1] unsigned. Produced by
 * bitsandbytes.functional.create_dynamic_map(True) / (False) (max_exponent_bits=7, total_bits=8;
 * bitsandbytes 0.50.2 on torch 2.13.0 CPU, whose AVX2 / AVX-512 linspace rounds start + step*i
 * once, as any AVX2 CPU does: see BUGS.md), printed with
 *     create_dynamic_map(signed).numpy().view(numpy.uint32)
 * tests/test_compact_kernels.py rebuilds them with numpy from the formula and compares, and
 * compares with bitsandbytes when it is installed. */
static const uint32_t lrc_q8_map_bits[2][256] = {
    {   /* signed */
        0xbf7e3333u, 0xbf7a999au, 0xbf770000u, 0xbf736666u, 0xbf6fcccdu, 0xbf6c3333u, 0xbf68999au, 0xbf650000u,
        0xbf616666u, 0xbf5dcccdu, 0xbf5a3333u, 0xbf56999au, 0xbf530000u, 0xbf4f6666u, 0xbf4bcccdu, 0xbf483333u,
        0xbf44999au, 0xbf410000u, 0xbf3d6666u, 0xbf39cccdu, 0xbf363334u, 0xbf32999au, 0xbf2f0000u, 0xbf2b6666u,
        0xbf27cccdu, 0xbf243334u, 0xbf20999au, 0xbf1d0000u, 0xbf196666u, 0xbf15cccdu, 0xbf123334u, 0xbf0e999au,
        0xbf0b0000u, 0xbf076666u, 0xbf03ccccu, 0xbf003333u, 0xbef93332u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au,
        0xbedc6666u, 0xbed53333u, 0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13333u, 0xbeaa0000u,
        0xbea2ccccu, 0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d9999u, 0xbe6f3333u, 0xbe60cccdu,
        0xbe526666u, 0xbe440000u, 0xbe35999au, 0xbe273333u, 0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u, 0xbddb3334u,
        0xbdc9eb85u, 0xbdc428f7u, 0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u, 0xbda75c2au, 0xbda1999au,
        0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu, 0xbd7e147bu, 0xbd728f5du, 0xbd670a3du,
        0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u, 0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae148u,
        0xbcfeb852u, 0xbce7ae15u, 0xbcd0a3d7u, 0xbcb9999au, 0xbca28f5du, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u,
        0xbc1f3b64u, 0xbc160418u, 0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u, 0xbbcfdf3bu, 0xbbbd70a4u,
        0xbbab020du, 0xbb989374u, 0xbb8624ddu, 0xbb676c8au, 0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du,
        0xba7765ffu, 0xba59e83eu, 0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u, 0xb923d70bu,
        0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u, 0xb513a3b7u, 0x00000000u,
        0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu,
        0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du,
        0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u,
        0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u,
        0x3c68f5c3u, 0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u,
        0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu, 0x3d670a3du,
        0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au,
        0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u,
        0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu,
        0x3e6f3333u, 0x3e7d9999u, 0x3e860000u, 0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u,
        0x3eb13333u, 0x3eb86666u, 0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au,
        0x3eeaccccu, 0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au,
        0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu, 0x3f2b6666u,
        0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u, 0x3f44999au, 0x3f483333u,
        0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u, 0x3f5dcccdu, 0x3f616666u, 0x3f650000u,
        0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u, 0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u,
    },
    {   /* unsigned */
        0x00000000u, 0x34ae7baau, 0x35500998u, 0x360e9b38u, 0x3692ccf6u, 0x36de4c51u, 0x3714e5d5u, 0x3783126eu,
        0x37e171a0u, 0x381fe868u, 0x384f1800u, 0x387e479au, 0x3896bb99u, 0x38ae5364u, 0x38c5eb31u, 0x3906594bu,
        0x394154cau, 0x397c5049u, 0x399ba5e4u, 0x39b923a2u, 0x39d6a163u, 0x39f41f22u, 0x3a08ce71u, 0x3a178d50u,
        0x3a264c30u, 0x3a350b10u, 0x3a43c9efu, 0x3a5288d0u, 0x3a6147afu, 0x3a70068eu, 0x3a7ec56eu, 0x3a958106u,
        0x3aba5e35u, 0x3adf3b64u, 0x3b020c4au, 0x3b147ae1u, 0x3b26e978u, 0x3b395810u, 0x3b4bc6a7u, 0x3b5e3540u,
        0x3b70a3d7u, 0x3b818937u, 0x3b8ac082u, 0x3b93f7cfu, 0x3b9d2f1au, 0x3ba66666u, 0x3baf9db2u, 0x3bb8d4fdu,
        0x3bc20c4au, 0x3bcb4395u, 0x3bd47ae1u, 0x3bddb22eu, 0x3be6e978u, 0x3bf020c5u, 0x3bf9580fu, 0x3c0147aeu,
        0x3c05e354u, 0x3c0a7ef9u, 0x3c0f1aa0u, 0x3c13b645u, 0x3c1851ebu, 0x3c1ced92u, 0x3c218937u, 0x3c2f5c2au,
        0x3c466667u, 0x3c5d70a3u, 0x3c747ae2u, 0x3c85c28fu, 0x3c9147afu, 0x3c9ccccdu, 0x3ca851ebu, 0x3cb3d70bu,
        0x3cbf5c29u, 0x3ccae147u, 0x3cd66667u, 0x3ce1eb87u, 0x3ced70a3u, 0x3cf8f5c3u, 0x3d023d70u, 0x3d080000u,
        0x3d0dc28fu, 0x3d13851fu, 0x3d1947afu, 0x3d1f0a3du, 0x3d24cccdu, 0x3d2a8f5cu, 0x3d3051ebu, 0x3d36147bu,
        0x3d3bd70au, 0x3d41999au, 0x3d475c28u, 0x3d4d1eb8u, 0x3d52e147u, 0x3d58a3d7u, 0x3d5e6667u, 0x3d6428f7u,
        0x3d69eb87u, 0x3d6fae15u, 0x3d7570a3u, 0x3d7b3333u, 0x3d807ae2u, 0x3d835c2au, 0x3d863d71u, 0x3d891eb8u,
        0x3d8c0000u, 0x3d8ee148u, 0x3d91c290u, 0x3d94a3d7u, 0x3d97851fu, 0x3d9a6667u, 0x3d9d47afu, 0x3da028f6u,
        0x3da30a3eu, 0x3da5eb85u, 0x3da8cccdu, 0x3dabae15u, 0x3dae8f5cu, 0x3db170a4u, 0x3db451ebu, 0x3db73333u,
        0x3dba147bu, 0x3dbcf5c3u, 0x3dbfd70bu, 0x3dc2b852u, 0x3dc5999au, 0x3dc87ae2u, 0x3dcb5c29u, 0x3dd40000u,
        0x3de26666u, 0x3df0cccdu, 0x3dff3333u, 0x3e06ccccu, 0x3e0e0000u, 0x3e153334u, 0x3e1c6666u, 0x3e23999au,
        0x3e2accccu, 0x3e320000u, 0x3e393334u, 0x3e406666u, 0x3e47999au, 0x3e4eccccu, 0x3e560000u, 0x3e5d3334u,
        0x3e646666u, 0x3e6b999au, 0x3e72ccccu, 0x3e7a0000u, 0x3e809999u, 0x3e843333u, 0x3e87cccdu, 0x3e8b6666u,
        0x3e8f0000u, 0x3e92999au, 0x3e963333u, 0x3e99ccccu, 0x3e9d6666u, 0x3ea10000u, 0x3ea4999au, 0x3ea83333u,
        0x3eabccccu, 0x3eaf6666u, 0x3eb30000u, 0x3eb6999au, 0x3eba3333u, 0x3ebdccccu, 0x3ec16666u, 0x3ec50000u,
        0x3ec8999au, 0x3ecc3333u, 0x3ecfccccu, 0x3ed36666u, 0x3ed70000u, 0x3eda999au, 0x3ede3333u, 0x3ee1ccccu,
        0x3ee56666u, 0x3ee90000u, 0x3eec999au, 0x3ef03333u, 0x3ef3ccccu, 0x3ef76666u, 0x3efb0000u, 0x3efe9999u,
        0x3f01199au, 0x3f02e666u, 0x3f04b333u, 0x3f068000u, 0x3f084cccu, 0x3f0a199au, 0x3f0be666u, 0x3f0db334u,
        0x3f0f8000u, 0x3f114ccdu, 0x3f13199au, 0x3f14e666u, 0x3f16b334u, 0x3f188000u, 0x3f1a4ccdu, 0x3f1c199au,
        0x3f1de666u, 0x3f1fb334u, 0x3f218000u, 0x3f234ccdu, 0x3f25199au, 0x3f26e666u, 0x3f28b334u, 0x3f2a8000u,
        0x3f2c4ccdu, 0x3f2e199au, 0x3f2fe666u, 0x3f31b334u, 0x3f338000u, 0x3f354ccdu, 0x3f37199au, 0x3f38e666u,
        0x3f3ab334u, 0x3f3c8000u, 0x3f3e4ccdu, 0x3f40199au, 0x3f41e666u, 0x3f43b334u, 0x3f458000u, 0x3f474cccu,
        0x3f49199au, 0x3f4ae666u, 0x3f4cb334u, 0x3f4e8000u, 0x3f504cccu, 0x3f52199au, 0x3f53e666u, 0x3f55b334u,
        0x3f578000u, 0x3f594cccu, 0x3f5b199au, 0x3f5ce666u, 0x3f5eb334u, 0x3f608000u, 0x3f624cccu, 0x3f64199au,
        0x3f65e666u, 0x3f67b334u, 0x3f698000u, 0x3f6b4cccu, 0x3f6d199au, 0x3f6ee666u, 0x3f70b334u, 0x3f728000u,
        0x3f744cccu, 0x3f76199au, 0x3f77e666u, 0x3f79b334u, 0x3f7b8000u, 0x3f7d4cccu, 0x3f7f199au, 0x3f800000u,
    },
};

LRC_ALWAYS_INLINE float lrc_q8_map_value(int is_unsigned, unsigned code)
{
    return lrc_bits_f32(lrc_q8_map_bits[is_unsigned != 0][code]);
}

/* ---- Bucket tables: the portable method and the exact fallback (see the top of this file) - */

#define LRC_Q8_HI 0x3f800000u               /* 1.0: every threshold is below it */
#define LRC_Q8S_LO 0x34800000u              /* 2**-22: the smallest |threshold| is 2.75e-7 */
#define LRC_Q8S_SHIFT 17
#define LRC_Q8S_HALF (((LRC_Q8_HI - LRC_Q8S_LO) >> LRC_Q8S_SHIFT) + 1)      /* 1409 */
#define LRC_Q8U_LO 0x34000000u              /* 2**-23: the smallest threshold is 1.625e-7 */
#define LRC_Q8U_SHIFT 16
#define LRC_Q8U_ENTRIES (((LRC_Q8_HI - LRC_Q8U_LO) >> LRC_Q8U_SHIFT) + 1)   /* 2945 */
#define LRC_Q8_NONE 0xffffffu               /* G of a bucket that holds no threshold */

static uint32_t lrc_q8_table_signed[2 * LRC_Q8S_HALF];     /* [positive half, negative half] */
static uint32_t lrc_q8_table_unsigned[LRC_Q8U_ENTRIES];

/* The ordered key of a float32 pattern (monotone in its value: -0 is -1, +0 is 0) and back. */
static int64_t lrc_q8_key(uint32_t u)
{
    return (u >> 31) ? -1 - (int64_t)(u & 0x7fffffffu) : (int64_t)u;
}
static uint32_t lrc_q8_pattern(int64_t key)
{
    return key >= 0 ? (uint32_t)key : 0x80000000u | (uint32_t)(-1 - key);
}

/* code(key) = #{c : F[c] <= key}, F the 255 ascending threshold keys. */
static unsigned lrc_q8_code_of_key(const int64_t *F, int64_t key)
{
    unsigned lo = 0, hi = 255;          /* the count is in [lo, hi] */
    while (lo < hi) {
        const unsigned mid = (lo + hi) / 2;     /* F[mid] <= key: count > mid */
        if (F[mid] <= key) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* F[c] = the key of the smallest float32 above t_c = (map[c] + map[c+1]) / 2, computed in
 * double (exact: the two float32 add without rounding, their exponents being close, and the
 * halving is exact). (float)t is within half an ulp of t; the loops step it to the answer. */
static void lrc_q8_threshold_keys(int is_unsigned, int64_t *F)
{
    for (int c = 0; c < 255; c++) {
        const double t = ((double)lrc_q8_map_value(is_unsigned, (unsigned)c)
                          + (double)lrc_q8_map_value(is_unsigned, (unsigned)c + 1)) * 0.5;
        int64_t k = lrc_q8_key(lrc_f32_bits((float)t));
        while ((double)lrc_bits_f32(lrc_q8_pattern(k)) <= t) k++;
        while ((double)lrc_bits_f32(lrc_q8_pattern(k - 1)) > t) k--;
        F[c] = k;
    }
}

/* The entry of the bucket of keys [lo, hi]; *ok cleared if it holds two thresholds. */
static uint32_t lrc_q8_entry(const int64_t *F, int64_t lo, int64_t hi, int *ok)
{
    const unsigned base = lrc_q8_code_of_key(F, lo);
    if (base == 255 || F[base] > hi) return base | (LRC_Q8_NONE << 8);
    if (base + 1 < 255 && F[base + 1] <= hi) *ok = 0;
    return base | (uint32_t)(F[base] - lo - 1) << 8;
}

/* ---- Regions: the vector levels' method (see the top of this file) ---------------------- */

#define LRC_Q8_REGION_LO 0x30000000u    /* 2**-31: smaller magnitudes clamp to it (region 0) */
#define LRC_Q8_A_MAX 0x3f800001u        /* the largest |n| of a finite block: 1 + 2**-23 */
#define LRC_Q8_NEVER 0x7f800000         /* a boundary no magnitude of the region path reaches */
#define LRC_Q8_FRAC 12                  /* fixed point: z = 2**12 * y - 1, Y = trunc(z) */

/* One map's regions (positive magnitudes a; the signed map's negatives mirror them). */
typedef struct {
    float k[16], o[16];         /* z = a * k[r] + o[r] = 4096 y - 1, regions 0..8 (rest unused) */
    int32_t hi[16];             /* the last code of region r */
    int32_t above[16];          /* the boundary above region r (F*_{r+1}; NEVER for r = 8) */
    int32_t bound[8];           /* F*_1..F*_8 as float32 patterns: region = #{k : a >= bound[k]} */
    int32_t binade_region[32];  /* by exponent & 31 (exponents 96..127): region at the start */
    int32_t binade_bound[32];   /* the boundary in (start, next start] of the binade, or NEVER */
} lrc_q8_regions;

static lrc_q8_regions lrc_q8_region_tables[2];      /* [is_unsigned] */

/* The region path's two codes for magnitude pattern a in region r, as a vector level computes
 * them: z = a * k + o (fused: AVX-512's FMA; else a multiply, then an add: AVX2), Y = trunc(z);
 * c1 = Y >> 12 = floor(y - 2**-12) is the code, c2 = (Y + 2) >> 12 = floor(y + 2**-12), and
 * the lane is ambiguous when they differ ((Y + 2) & 4094 == 0). Y < 0 never passes the checks
 * (the shifts would be implementation-defined): *c1 = -1 then. */
static void lrc_q8_region_codes(const lrc_q8_regions *R, int r, uint32_t a, int fused,
                                int32_t *c1, int32_t *c2)
{
    volatile float product = lrc_bits_f32(a) * R->k[r];   /* volatile: never contracted */
    const float z = fused ? fmaf(lrc_bits_f32(a), R->k[r], R->o[r]) : product + R->o[r];
    const int32_t Y = (int32_t)z;
    *c1 = Y < 0 ? -1 : Y >> LRC_Q8_FRAC;
    *c2 = Y < 0 ? -1 : (Y + 2) >> LRC_Q8_FRAC;
}

/* Build map u's regions from its threshold keys F, and check everything the region path relies
 * on (see the top of this file); returns 1 when every check holds. */
static int lrc_q8_build_regions(int is_unsigned, const int64_t *F, lrc_q8_regions *R)
{
    /* first[r]: region r's first code. Region 0 is the zero code, 1..7 the decades (signed: 1,
     * 2, ..., 64 entries from code 128; unsigned: 2, ..., 128 from code 1), 8 the code 255. */
    int first[10], ok = 1;
    first[0] = is_unsigned ? (int)LRC_Q8_ZERO_UNSIGNED : (int)LRC_Q8_ZERO_SIGNED;
    int code = first[0] + 1;
    for (int d = 0; d < 7; d++) {
        first[1 + d] = code;
        code += (is_unsigned ? 2 : 1) << d;
    }
    ok &= code == 255;
    first[8] = 255;
    first[9] = 256;
    memset(R, 0, sizeof *R);
    for (int k = 0; k < 8; k++) {       /* boundary k + 1: the threshold below region k + 1 */
        R->bound[k] = (int32_t)F[first[k + 1] - 1];
        ok &= F[first[k + 1] - 1] > (int64_t)LRC_Q8_REGION_LO;
    }
    for (int r = 0; r < 9; r++) {
        const int lo = first[r], hi = first[r + 1] - 1;
        double K = 0.0, O = lo + 0.5;
        /* the thresholds c = lo .. hi - 1 (between codes c and c + 1) go to y = c + 1 */
#define LRC_T(c) (((double)lrc_q8_map_value(is_unsigned, (unsigned)(c)) \
                   + (double)lrc_q8_map_value(is_unsigned, (unsigned)(c) + 1)) * 0.5)
        if (hi - lo >= 2) {
            K = (hi - lo - 1) / (LRC_T(hi - 1) - LRC_T(lo));
            O = (lo + 1) - K * LRC_T(lo);
        } else if (hi - lo == 1) {
            K = 1.0 / ((double)lrc_q8_map_value(is_unsigned, (unsigned)hi)
                       - (double)lrc_q8_map_value(is_unsigned, (unsigned)lo));
            O = hi - K * LRC_T(lo);
        }
        R->k[r] = (float)(K * (1 << LRC_Q8_FRAC));
        R->o[r] = (float)(O * (1 << LRC_Q8_FRAC) - 1.0);
        R->hi[r] = hi;
        R->above[r] = r < 8 ? R->bound[r] : LRC_Q8_NEVER;
        /* every threshold: right code on both sides, or ambiguous; a representable one (a
         * possible tie: the signed map's mirror would be one off) ambiguous */
        const uint32_t start = r ? (uint32_t)R->bound[r - 1] : LRC_Q8_REGION_LO;
        const uint32_t end = r < 8 ? (uint32_t)R->bound[r] - 1 : LRC_Q8_A_MAX;
        for (int fused = 0; fused < 2; fused++) {
            int32_t c1, c2;
            lrc_q8_region_codes(R, r, start, fused, &c1, &c2);
            ok &= c1 >= 0 && c2 >= lo;
            for (int c = lo; c < hi; c++) {
                const uint32_t f = (uint32_t)F[c];
                lrc_q8_region_codes(R, r, f - 1, fused, &c1, &c2);
                ok &= c1 <= c;
                if (!is_unsigned && (double)lrc_bits_f32(f - 1) == LRC_T(c)) ok &= c1 != c2;
                lrc_q8_region_codes(R, r, f, fused, &c1, &c2);
                ok &= c2 >= c + 1;
            }
            lrc_q8_region_codes(R, r, end, fused, &c1, &c2);
            ok &= lo < hi || c1 <= lo;
        }
#undef LRC_T
    }
    for (int i = 0; i < 32; i++) {      /* binade i: exponent 96 + i */
        const int64_t start = (int64_t)(96 + i) << 23, next = start + ((int64_t)1 << 23);
        R->binade_region[i] = 0;
        R->binade_bound[i] = LRC_Q8_NEVER;
        for (int k = 0; k < 8; k++) {
            if (R->bound[k] <= start) R->binade_region[i]++;
            else if (R->bound[k] <= next) {
                ok &= R->binade_bound[i] == LRC_Q8_NEVER;       /* one boundary per binade */
                R->binade_bound[i] = R->bound[k];
            }
        }
    }
    return ok;
}

static int lrc_q8_state = 0;        /* 0: not built; 1: built and checked; -1: a check failed */

/* Build the tables of both methods and check what they rely on: at most one threshold per
 * bucket; the same code for every magnitude below LO (down to ±0, and every negative value for
 * the unsigned map) and above HI (up to ±inf); the regions' checks. Returns 0, or -1 if a check
 * failed (the extension then refuses to import). The maps are constants, so this gives the same
 * answer every time; a first call racing another writes the same values. */
static int lrc_q8_init(void)
{
#if defined(__GNUC__) || defined(__clang__)
    int state = __atomic_load_n(&lrc_q8_state, __ATOMIC_ACQUIRE);
#else
    int state = lrc_q8_state;
#endif
    if (state) return state > 0 ? 0 : -1;
    int64_t F[255];
    int ok = 1;
    const int64_t pos_inf = lrc_q8_key(0x7f800000u), neg_inf = lrc_q8_key(0xff800000u);

    lrc_q8_threshold_keys(0, F);
    for (uint32_t j = 0; j < LRC_Q8S_HALF; j++) {
        const int64_t mag = (int64_t)LRC_Q8S_LO + ((int64_t)j << LRC_Q8S_SHIFT);
        const int64_t width = (int64_t)1 << LRC_Q8S_SHIFT;
        /* positive: keys are the magnitudes; negative: keys -(mag + width) .. -1 - mag */
        lrc_q8_table_signed[j] = lrc_q8_entry(F, mag, mag + width - 1, &ok);
        lrc_q8_table_signed[LRC_Q8S_HALF + j] = lrc_q8_entry(F, -(mag + width), -1 - mag, &ok);
    }
    ok &= lrc_q8_code_of_key(F, 0) == lrc_q8_code_of_key(F, LRC_Q8S_LO);
    ok &= lrc_q8_code_of_key(F, -1) == lrc_q8_code_of_key(F, -1 - (int64_t)LRC_Q8S_LO);
    ok &= lrc_q8_code_of_key(F, LRC_Q8_HI) == lrc_q8_code_of_key(F, pos_inf);
    ok &= lrc_q8_code_of_key(F, -1 - (int64_t)LRC_Q8_HI) == lrc_q8_code_of_key(F, neg_inf);
    ok &= lrc_q8_code_of_key(F, 0) == LRC_Q8_ZERO_SIGNED;
    ok &= lrc_q8_build_regions(0, F, &lrc_q8_region_tables[0]);
    /* the AVX-512 dequantization uses the signed map's symmetry */
    ok &= lrc_q8_map_bits[0][LRC_Q8_ZERO_SIGNED] == 0 && lrc_q8_map_bits[0][255] == 0x3f800000u;
    for (unsigned k = 1; k < 128; k++)
        ok &= lrc_q8_map_bits[0][LRC_Q8_ZERO_SIGNED - k]
              == (lrc_q8_map_bits[0][LRC_Q8_ZERO_SIGNED + k] ^ 0x80000000u);

    lrc_q8_threshold_keys(1, F);
    for (uint32_t j = 0; j < LRC_Q8U_ENTRIES; j++) {
        const int64_t mag = (int64_t)LRC_Q8U_LO + ((int64_t)j << LRC_Q8U_SHIFT);
        lrc_q8_table_unsigned[j] =
            lrc_q8_entry(F, mag, mag + ((int64_t)1 << LRC_Q8U_SHIFT) - 1, &ok);
    }
    ok &= lrc_q8_code_of_key(F, neg_inf) == lrc_q8_code_of_key(F, LRC_Q8U_LO);
    ok &= lrc_q8_code_of_key(F, LRC_Q8_HI) == lrc_q8_code_of_key(F, pos_inf);
    ok &= lrc_q8_code_of_key(F, 0) == LRC_Q8_ZERO_UNSIGNED;
    ok &= lrc_q8_build_regions(1, F, &lrc_q8_region_tables[1]);

    state = ok ? 1 : -1;
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&lrc_q8_state, state, __ATOMIC_RELEASE);
#else
    lrc_q8_state = state;
#endif
    return ok ? 0 : -1;
}

/* The code of n (as its float32 pattern u) in the signed map. */
LRC_ALWAYS_INLINE uint32_t lrc_q8_code_signed(uint32_t u)
{
    const uint32_t a = u & 0x7fffffffu, sm = 0u - (u >> 31);     /* sm: all ones if negative */
    const uint32_t c = a < LRC_Q8S_LO ? LRC_Q8S_LO : a > LRC_Q8_HI ? LRC_Q8_HI : a;
    const uint32_t e =
        lrc_q8_table_signed[((c - LRC_Q8S_LO) >> LRC_Q8S_SHIFT) + (sm & LRC_Q8S_HALF)];
    const uint32_t offset = (c ^ sm) & ((1u << LRC_Q8S_SHIFT) - 1);
    const uint32_t code = (e & 0xffu) + (offset > (e >> 8));
    return a > 0x7f800000u ? LRC_Q8_ZERO_SIGNED : code;
}

/* The code of n in the unsigned map: a negative pattern clamps to LO (code 0), as a NaN of
 * either sign must end (code 0). */
LRC_ALWAYS_INLINE uint32_t lrc_q8_code_unsigned(uint32_t u)
{
    const uint32_t c = (u >> 31) || u < LRC_Q8U_LO ? LRC_Q8U_LO : u > LRC_Q8_HI ? LRC_Q8_HI : u;
    const uint32_t e = lrc_q8_table_unsigned[(c - LRC_Q8U_LO) >> LRC_Q8U_SHIFT];
    const uint32_t code = (e & 0xffu) + ((c & ((1u << LRC_Q8U_SHIFT) - 1)) > (e >> 8));
    return u > 0x7f800000u ? LRC_Q8_ZERO_UNSIGNED : code;
}

/* The block's absmax pattern: max of the magnitude patterns (NaN's are the largest). */
LRC_ALWAYS_INLINE uint32_t lrc_q8_absmax_bits_portable(const float *x, ptrdiff_t n)
{
    uint32_t m = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint32_t a = lrc_f32_bits(x[i]) & 0x7fffffffu;
        m = a > m ? a : m;
    }
    return m;
}

/* Codes of x[i] * inv from i = from to n, one element at a time (the portable level, and the
 * tails of the vector ones). */
LRC_ALWAYS_INLINE void lrc_q8_codes_portable(const float *x, float inv, int is_unsigned,
                                             uint8_t *codes, ptrdiff_t from, ptrdiff_t n)
{
    if (is_unsigned)
        for (ptrdiff_t i = from; i < n; i++)
            codes[i] = (uint8_t)lrc_q8_code_unsigned(lrc_f32_bits(x[i] * inv));
    else
        for (ptrdiff_t i = from; i < n; i++)
            codes[i] = (uint8_t)lrc_q8_code_signed(lrc_f32_bits(x[i] * inv));
}

/* ---- Reproducible random bits ------------------------------------------------------------ */

LRC_ALWAYS_INLINE uint64_t lrc_splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9E3779B97F4A7C15u;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* The key of one array's rounding in one update: seed (the state's), step (its step_count before
 * this update), array (the array's position in the call), slot (the buffer slot 0..2 of
 * lrc_array.buf, 3 for the params). */
static inline uint64_t lrc_rounding_key(uint64_t seed, uint64_t step, uint64_t array,
                                        uint64_t slot)
{
    return lrc_splitmix64(lrc_splitmix64(lrc_splitmix64(lrc_splitmix64(seed) ^ step) ^ array)
                          ^ slot);
}

LRC_ALWAYS_INLINE uint32_t lrc_lowbias32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

/* float32 pattern u rounded to bfloat16 with the random bits r (< 2**16); NaN quieted as
 * lrc_store_bf16 does. (u + r cannot wrap but for a negative NaN, which is replaced.) */
LRC_ALWAYS_INLINE uint16_t lrc_bf16_round_with(uint32_t u, uint32_t r)
{
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : (u + r) >> 16);
}

/* One run of stochastic rounding: n elements whose indices in the array are e0 + i, all with the
 * same e >> 32 (so their (uint32)e do not wrap), k2 = (uint32)splitmix64(key ^ (e >> 32)). */
typedef void (*lrc_sr_run_fn)(const float *x, uint16_t *out, ptrdiff_t n, uint32_t k2,
                              uint32_t e0);

static void lrc_sr_run_portable(const float *x, uint16_t *out, ptrdiff_t n, uint32_t k2,
                                uint32_t e0)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = lrc_bf16_round_with(lrc_f32_bits(x[i]),
                                     lrc_lowbias32((e0 + (uint32_t)i) ^ k2) >> 16);
}

/* Cut [start, start + n) at the multiples of 2**32 (where e >> 32 changes) and round each run. */
LRC_ALWAYS_INLINE void lrc_sr_runs(lrc_sr_run_fn run, const float *x, uint16_t *out, ptrdiff_t n,
                                   uint64_t key, int64_t start)
{
    ptrdiff_t done = 0;
    while (done < n) {
        const uint64_t e = (uint64_t)start + (uint64_t)done;
        const uint64_t room = ((uint64_t)1 << 32) - (e & 0xffffffffu);
        const ptrdiff_t len = (uint64_t)(n - done) < room ? n - done : (ptrdiff_t)room;
        run(x + done, out + done, len, (uint32_t)lrc_splitmix64(key ^ (e >> 32)), (uint32_t)e);
        done += len;
    }
}

/* lrc_q8_codes_block_LEVEL: the codes of one block of absmax pattern `bits` at a vector level,
 * by lrc_q8_block_case: zero codes (absmax 0, NaN or inf), the bucket method (1 / absmax =
 * inf), else the level's region path lrc_q8_codes_LEVEL with the map fixed per call site. */
#define LRC_Q8_CODES_BLOCK(level, ATTR)                                                        \
    ATTR LRC_ALWAYS_INLINE void lrc_q8_codes_block_##level(const float *x, uint32_t bits,     \
                                                           int is_unsigned, uint8_t *codes,   \
                                                           ptrdiff_t n)                       \
    {                                                                                          \
        const float inv = 1.0f / lrc_bits_f32(bits);                                           \
        switch (lrc_q8_block_case(bits, inv)) {                                                \
        case 1: memset(codes, is_unsigned ? LRC_Q8_ZERO_UNSIGNED : LRC_Q8_ZERO_SIGNED,         \
                       (size_t)n); break;                                                      \
        case 2: lrc_q8_codes_portable(x, inv, is_unsigned, codes, 0, n); break;                \
        default:                                                                               \
            if (is_unsigned) lrc_q8_codes_##level(x, inv, 1, codes, n);                        \
            else lrc_q8_codes_##level(x, inv, 0, codes, n);                                    \
        }                                                                                      \
    }

/* ---- Block drivers ----------------------------------------------------------------------- */

/* lrc_q8_quantize_blocks_LEVEL / lrc_q8_dequantize_blocks_LEVEL: n elements (any n >= 0) in
 * blocks of LRC_Q8_BLOCK from element 0, absmax[b] per block b, from the level's
 * lrc_q8_absmax_bits_LEVEL(x, n) and lrc_q8_codes_block_LEVEL(x, absmax bits, is_unsigned,
 * codes, n) (one block each) and its one-block dequantization. The next block's absmax is taken
 * before this block's codes: nothing waits for it, so its dependent chain (maximum, reduction,
 * division) overlaps this block's codes instead of stalling the next block's (15% of a block's
 * time at AVX-512). */
#define LRC_Q8_BLOCK_DRIVERS(level, ATTR)                                                      \
    ATTR static void lrc_q8_quantize_blocks_##level(const float *x, int is_unsigned,          \
                                                    uint8_t *codes, float *absmax,            \
                                                    ptrdiff_t n)                              \
    {                                                                                          \
        if (n <= 0) return;                                                                    \
        uint32_t bits = lrc_q8_absmax_bits_##level(x, n < LRC_Q8_BLOCK ? n : LRC_Q8_BLOCK);    \
        for (ptrdiff_t b = 0; b < n; b += LRC_Q8_BLOCK) {                                      \
            const ptrdiff_t rest = n - b - LRC_Q8_BLOCK;                                       \
            const uint32_t next = rest <= 0 ? 0u : lrc_q8_absmax_bits_##level(                  \
                x + b + LRC_Q8_BLOCK, rest < LRC_Q8_BLOCK ? rest : LRC_Q8_BLOCK);               \
            absmax[b / LRC_Q8_BLOCK] = lrc_bits_f32(bits);                                     \
            lrc_q8_codes_block_##level(x + b, bits, is_unsigned, codes + b,                    \
                                       rest < 0 ? n - b : LRC_Q8_BLOCK);                       \
            bits = next;                                                                       \
        }                                                                                      \
    }                                                                                          \
    static void lrc_q8_dequantize_blocks_##level(const uint8_t *codes, const float *absmax,   \
                                                 int is_unsigned, float *out, ptrdiff_t n)    \
    {                                                                                          \
        for (ptrdiff_t b = 0; b < n; b += LRC_Q8_BLOCK)                                        \
            lrc_q8_dequantize_##level(codes + b, absmax[b / LRC_Q8_BLOCK], is_unsigned,        \
                                      out + b, n - b < LRC_Q8_BLOCK ? n - b : LRC_Q8_BLOCK);   \
    }

/* ---- Portable level ----------------------------------------------------------------------- */

static void lrc_q8_codes_block_portable(const float *x, uint32_t absmax_bits, int is_unsigned,
                                        uint8_t *codes, ptrdiff_t n)
{
    lrc_q8_codes_portable(x, 1.0f / lrc_bits_f32(absmax_bits), is_unsigned, codes, 0, n);
}

static void lrc_q8_dequantize_portable(const uint8_t *codes, float absmax, int is_unsigned,
                                       float *out, ptrdiff_t n)
{
    const uint32_t *map = lrc_q8_map_bits[is_unsigned != 0];
    for (ptrdiff_t i = 0; i < n; i++) out[i] = lrc_bits_f32(map[codes[i]]) * absmax;
}

static void lrc_round_bf16_stochastic_portable(const float *x, uint16_t *out, ptrdiff_t n,
                                               uint64_t key, int64_t start)
{
    lrc_sr_runs(lrc_sr_run_portable, x, out, n, key, start);
}

LRC_Q8_BLOCK_DRIVERS(portable, )

/* ---- x86-64 levels: AVX2 and AVX-512F --------------------------------------------------- */
#if LRC_X86_CONVERSIONS

#define LRC_AVX2 __attribute__((target("avx2")))
#define LRC_AVX512 __attribute__((target("avx512f")))

/* What a vector level does with a block of this absmax: 0 the region path (1 / absmax finite,
 * so every n is finite with |n| <= 1 + 2**-23); 1 zero codes for all (absmax NaN: every n is
 * NaN; 0: every n is 0 * inf = NaN; inf: every n is ±0 or NaN); 2 the bucket method (absmax so
 * small that 1 / absmax = inf: n is ±inf or NaN). */
static inline int lrc_q8_block_case(uint32_t absmax_bits, float inv)
{
    if (absmax_bits == 0 || absmax_bits >= 0x7f800000u) return 1;
    return lrc_f32_bits(inv) == 0x7f800000u ? 2 : 0;
}

/* Redo the lanes of `ambiguous` (bit j: element i + j) by the bucket method. */
LRC_ALWAYS_INLINE void lrc_q8_redo(const float *x, float inv, int is_unsigned, uint8_t *codes,
                                   ptrdiff_t i, unsigned ambiguous)
{
    while (ambiguous) {
        const int j = __builtin_ctz(ambiguous);
        const uint32_t u = lrc_f32_bits(x[i + j] * inv);
        codes[i + j] = (uint8_t)(is_unsigned ? lrc_q8_code_unsigned(u) : lrc_q8_code_signed(u));
        ambiguous &= ambiguous - 1;
    }
}

/* Codes of 8 products v by the region path, as dwords (0..255); *ambiguous gets a bit per lane
 * to redo. bound_m1[k] = F*_{k+1} - 1 broadcast (a > it: a >= F*). */
LRC_AVX2 LRC_ALWAYS_INLINE __m256i lrc_q8_codes8_avx2(__m256 v, const lrc_q8_regions *R,
                                                      const __m256i *bound_m1, int is_unsigned,
                                                      unsigned *ambiguous)
{
    const __m256i u = _mm256_castps_si256(v);
    /* a = |n|; unsigned: a negative n (as int32) to 0 (region 0: code 0) */
    const __m256i a = is_unsigned ? _mm256_max_epi32(u, _mm256_setzero_si256())
                                  : _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    /* region = #{k : a >= F*_k}, counted with the compares' -1s; region 8 (a >= F*_8) is
     * beyond the 8-entry permutes: blended in with the last compare */
    __m256i r = _mm256_setzero_si256(), last = r;
    for (int k = 0; k < 8; k++) {
        last = _mm256_cmpgt_epi32(a, bound_m1[k]);
        r = _mm256_sub_epi32(r, last);
    }
    const __m256 top = _mm256_castsi256_ps(last);
    const __m256 kr = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(R->k), r),
                                       _mm256_set1_ps(R->k[8]), top);
    const __m256 orr = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(R->o), r),
                                        _mm256_set1_ps(R->o[8]), top);
    const __m256i hi = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_permutevar8x32_ps(_mm256_loadu_ps((const float *)R->hi), r),
        _mm256_castsi256_ps(_mm256_set1_epi32(R->hi[8])), top));
    /* Y = trunc(4096 y - 1): code Y >> 12, ambiguous if (Y + 2) & 4094 == 0 */
    const __m256i Y = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_castsi256_ps(a), kr), orr));
    __m256i flag = _mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_add_epi32(Y, _mm256_set1_epi32(2)), _mm256_set1_epi32(4094)),
        _mm256_setzero_si256());
    __m256i code = _mm256_min_epi32(_mm256_srai_epi32(Y, LRC_Q8_FRAC), hi);
    if (!is_unsigned) {
        /* just below a boundary (a possible tie): ambiguous */
        const __m256i above = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_permutevar8x32_ps(_mm256_loadu_ps((const float *)R->above), r),
            _mm256_castsi256_ps(_mm256_set1_epi32(LRC_Q8_NEVER)), top));
        flag = _mm256_or_si256(
            _mm256_cmpeq_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(1)), above), flag);
        /* negatives: 254 - code, as (code ^ s) + (s & 255) with s = -1; at least 0 */
        const __m256i s = _mm256_srai_epi32(u, 31);
        code = _mm256_max_epi32(_mm256_add_epi32(_mm256_xor_si256(code, s),
                                                 _mm256_and_si256(s, _mm256_set1_epi32(255))),
                                _mm256_setzero_si256());
    }
    *ambiguous = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(flag));
    return code;
}

LRC_AVX2 LRC_ALWAYS_INLINE void lrc_q8_codes_avx2(const float *x, float inv, int is_unsigned,
                                                  uint8_t *codes, ptrdiff_t n)
{
    const lrc_q8_regions *R = &lrc_q8_region_tables[is_unsigned];
    __m256i bound_m1[8];
    for (int k = 0; k < 8; k++) bound_m1[k] = _mm256_set1_epi32(R->bound[k] - 1);
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c[4];
        unsigned ambiguous = 0, lanes;
        for (int j = 0; j < 4; j++) {
            c[j] = lrc_q8_codes8_avx2(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), vinv), R,
                                      bound_m1, is_unsigned, &lanes);
            ambiguous |= lanes << (8 * j);
        }
        /* dwords -> bytes: the packs work per 128-bit lane, the permute restores the order */
        const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]),
                                                  _mm256_packus_epi32(c[2], c[3]));
        _mm256_storeu_si256((__m256i *)(codes + i), _mm256_permutevar8x32_epi32(bytes, order));
        lrc_q8_redo(x, inv, is_unsigned, codes, i, ambiguous);
    }
    lrc_q8_codes_portable(x, inv, is_unsigned, codes, i, n);
}

LRC_AVX2 LRC_ALWAYS_INLINE uint32_t lrc_q8_absmax_bits_avx2(const float *x, ptrdiff_t n)
{
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    __m256i m = _mm256_setzero_si256();
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_epi32(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)),
                                                 magnitude));
    __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
    const uint32_t bits = (uint32_t)_mm_cvtsi128_si32(h);
    const uint32_t tail = lrc_q8_absmax_bits_portable(x + i, n - i);
    return tail > bits ? tail : bits;
}

LRC_Q8_CODES_BLOCK(avx2, LRC_AVX2)

#define lrc_q8_dequantize_avx2 lrc_q8_dequantize_portable
LRC_Q8_BLOCK_DRIVERS(avx2, LRC_AVX2)
#undef lrc_q8_dequantize_avx2

LRC_AVX2 LRC_ALWAYS_INLINE __m256i lrc_sr8_avx2(const float *x, __m256i e, __m256i k2)
{
    __m256i h = _mm256_xor_si256(e, k2);
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32(0x21f0aaad));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32(0x735a2d97));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
    const __m256i u = _mm256_loadu_si256((const __m256i *)x);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_srli_epi32(h, 16)), 16);
    const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                              _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(rounded, nan, is_nan);
}

LRC_AVX2 static void lrc_sr_run_avx2(const float *x, uint16_t *out, ptrdiff_t n, uint32_t k2,
                                     uint32_t e0)
{
    const __m256i key = _mm256_set1_epi32((int)k2), step = _mm256_set1_epi32(16);
    __m256i e = _mm256_add_epi32(_mm256_set1_epi32((int)e0),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = lrc_sr8_avx2(x + i, e, key);
        const __m256i b = lrc_sr8_avx2(x + i + 8, _mm256_add_epi32(e, _mm256_set1_epi32(8)), key);
        /* values < 2**16: packus keeps them; it interleaves the 128-bit lanes, permute4x64
         * puts them back */
        _mm256_storeu_si256((__m256i *)(out + i),
                            _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b),
                                                     _MM_SHUFFLE(3, 1, 2, 0)));
        e = _mm256_add_epi32(e, step);
    }
    lrc_sr_run_portable(x + i, out + i, n - i, k2, e0 + (uint32_t)i);
}

static void lrc_round_bf16_stochastic_avx2(const float *x, uint16_t *out, ptrdiff_t n,
                                           uint64_t key, int64_t start)
{
    lrc_sr_runs(lrc_sr_run_avx2, x, out, n, key, start);
}

/* AVX-512F: 16 lanes; masked loads and narrowing stores (vpmovdb / vpmovdw) take the tails. */

/* Codes of 16 products v by the region path, as dwords (0..255); *ambiguous: the lanes to redo. */
LRC_AVX512 LRC_ALWAYS_INLINE __m512i lrc_q8_codes16_avx512(__m512 v, const lrc_q8_regions *R,
                                                           const __m512i *tables, int is_unsigned,
                                                           __mmask16 *ambiguous)
{
    const __m512i u = _mm512_castps_si512(v), one = _mm512_set1_epi32(1);
    const __m512i lo = _mm512_set1_epi32((int)LRC_Q8_REGION_LO);
    /* a = |n| at least 2**-31 (exponents 96..127); unsigned: a negative n (as int32) to 2**-31 */
    const __m512i a = is_unsigned ? _mm512_max_epi32(u, lo)
                                  : _mm512_max_epi32(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), lo);
    /* the region: at the binade's start, plus one past the binade's boundary (e & 31 indexes) */
    const __m512i e = _mm512_srli_epi32(a, 23);
    const __m512i bound = _mm512_permutex2var_epi32(tables[2], e, tables[3]);
    __m512i r = _mm512_permutex2var_epi32(tables[0], e, tables[1]);
    r = _mm512_mask_add_epi32(r, _mm512_cmpge_epi32_mask(a, bound), r, one);
    /* Y = trunc(4096 y - 1): code Y >> 12, ambiguous if (Y + 2) & 4094 == 0 */
    const __m512i Y = _mm512_cvttps_epi32(_mm512_fmadd_ps(
        _mm512_castsi512_ps(a), _mm512_permutexvar_ps(r, _mm512_loadu_ps(R->k)),
        _mm512_permutexvar_ps(r, _mm512_loadu_ps(R->o))));
    __mmask16 flag = _mm512_testn_epi32_mask(_mm512_add_epi32(Y, _mm512_set1_epi32(2)),
                                             _mm512_set1_epi32(4094));
    __m512i code = _mm512_min_epi32(_mm512_srai_epi32(Y, LRC_Q8_FRAC),
                                    _mm512_permutexvar_epi32(r, _mm512_loadu_si512(R->hi)));
    if (!is_unsigned) {
        /* just below a boundary (a possible tie): ambiguous */
        flag |= _mm512_cmpeq_epi32_mask(_mm512_add_epi32(a, one), bound);
        /* negatives: 254 - code, at least 0 (code 255, n <= -t_254, gives -1) */
        const __mmask16 negative = _mm512_test_epi32_mask(u, _mm512_set1_epi32((int)0x80000000u));
        code = _mm512_max_epi32(_mm512_mask_sub_epi32(code, negative, _mm512_set1_epi32(254), code),
                                _mm512_setzero_si512());
    }
    *ambiguous = flag;
    return code;
}

LRC_AVX512 LRC_ALWAYS_INLINE void lrc_q8_codes_avx512(const float *x, float inv, int is_unsigned,
                                                      uint8_t *codes, ptrdiff_t n)
{
    const lrc_q8_regions *R = &lrc_q8_region_tables[is_unsigned];
    const __m512i tables[4] = {
        _mm512_loadu_si512(R->binade_region), _mm512_loadu_si512(R->binade_region + 16),
        _mm512_loadu_si512(R->binade_bound), _mm512_loadu_si512(R->binade_bound + 16)};
    const __m512 vinv = _mm512_set1_ps(inv);
    __mmask16 ambiguous;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i code = lrc_q8_codes16_avx512(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv),
                                                   R, tables, is_unsigned, &ambiguous);
        _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(code));
        if (ambiguous) lrc_q8_redo(x, inv, is_unsigned, codes, i, ambiguous);
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        const __m512i code = lrc_q8_codes16_avx512(
            _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vinv), R, tables, is_unsigned,
            &ambiguous);
        _mm512_mask_cvtepi32_storeu_epi8(codes + i, k, code);
        lrc_q8_redo(x, inv, is_unsigned, codes, i, ambiguous & k);
    }
}

LRC_AVX512 LRC_ALWAYS_INLINE uint32_t lrc_q8_absmax_bits_avx512(const float *x, ptrdiff_t n)
{
    /* the absmax pattern: four running maxima (a short dependent chain: the codes wait for it) */
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    __m512i m[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int j = 0; j < 4; j++)
            m[j] = _mm512_max_epi32(m[j], _mm512_and_si512(_mm512_loadu_si512(x + i + 16 * j),
                                                           magnitude));
    for (; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        m[0] = _mm512_max_epi32(m[0], _mm512_and_si512(_mm512_maskz_loadu_epi32(k, x + i),
                                                       magnitude));
    }
    const __m512i m01 = _mm512_max_epi32(m[0], m[1]), m23 = _mm512_max_epi32(m[2], m[3]);
    return (uint32_t)_mm512_reduce_max_epi32(_mm512_max_epi32(m01, m23));
}

LRC_Q8_CODES_BLOCK(avx512, LRC_AVX512)

/* 16 codes from codes[0 .. n) (n >= 16: a plain load; else through a zeroed copy: AVX-512F has
 * no byte-masked load), zero-extended to dwords. */
LRC_AVX512 LRC_ALWAYS_INLINE __m512i lrc_q8_load_codes16(const uint8_t *codes, ptrdiff_t n)
{
    if (n >= 16) return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    uint8_t tail[16] = {0};
    memcpy(tail, codes, (size_t)n);
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)tail));
}

/* map[code] * absmax. Unsigned map: eight 32-entry permutes on the code's low 5 bits and a blend
 * tree on bits 5..7. Signed map: its negatives are the exact negations of its positives
 * (map[127 - k] = -map[127 + k], checked by lrc_q8_init), so four permutes on k = |code - 127|
 * (k = 128 is 1.0, blended in) and the sign of code - 127. */
LRC_AVX512 static void lrc_q8_dequantize_avx512(const uint8_t *codes, float absmax,
                                                int is_unsigned, float *out, ptrdiff_t n)
{
    const __m512 scale = _mm512_set1_ps(absmax);
    const __m512i b5 = _mm512_set1_epi32(32), b6 = _mm512_set1_epi32(64);
    const __m512i b7 = _mm512_set1_epi32(128);
    if (is_unsigned) {
        const uint32_t *map = lrc_q8_map_bits[1];
        __m512 t[16];
        for (int j = 0; j < 16; j++) t[j] = _mm512_loadu_ps(map + 16 * j);
        for (ptrdiff_t i = 0; i < n; i += 16) {
            const __m512i c = lrc_q8_load_codes16(codes + i, n - i);
            __m512 r[8];
            for (int j = 0; j < 8; j++) r[j] = _mm512_permutex2var_ps(t[2 * j], c, t[2 * j + 1]);
            const __mmask16 m5 = _mm512_test_epi32_mask(c, b5), m6 = _mm512_test_epi32_mask(c, b6);
            const __mmask16 m7 = _mm512_test_epi32_mask(c, b7);
            for (int j = 0; j < 4; j++) r[j] = _mm512_mask_blend_ps(m5, r[2 * j], r[2 * j + 1]);
            for (int j = 0; j < 2; j++) r[j] = _mm512_mask_blend_ps(m6, r[2 * j], r[2 * j + 1]);
            const __m512 v = _mm512_mul_ps(_mm512_mask_blend_ps(m7, r[0], r[1]), scale);
            if (n - i >= 16) _mm512_storeu_ps(out + i, v);
            else _mm512_mask_storeu_ps(out + i, (__mmask16)((1u << (n - i)) - 1), v);
        }
        return;
    }
    const uint32_t *half = lrc_q8_map_bits[0] + LRC_Q8_ZERO_SIGNED;    /* map[127 + k], k < 128 */
    __m512 t[8];
    for (int j = 0; j < 8; j++) t[j] = _mm512_loadu_ps(half + 16 * j);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const __m512i d = _mm512_sub_epi32(lrc_q8_load_codes16(codes + i, n - i),
                                           _mm512_set1_epi32((int)LRC_Q8_ZERO_SIGNED));
        const __m512i k = _mm512_abs_epi32(d);
        __m512 r[4];
        for (int j = 0; j < 4; j++) r[j] = _mm512_permutex2var_ps(t[2 * j], k, t[2 * j + 1]);
        const __mmask16 m5 = _mm512_test_epi32_mask(k, b5), m6 = _mm512_test_epi32_mask(k, b6);
        r[0] = _mm512_mask_blend_ps(m5, r[0], r[1]);
        r[1] = _mm512_mask_blend_ps(m5, r[2], r[3]);
        r[0] = _mm512_mask_blend_ps(m6, r[0], r[1]);
        r[0] = _mm512_mask_blend_ps(_mm512_test_epi32_mask(k, b7), r[0], one);    /* code 255 */
        /* | (d & sign): 0xF8 = A | (B & C) */
        const __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_ternarylogic_epi32(
                                           _mm512_castps_si512(r[0]), d, sign, 0xF8)),
                                       scale);
        if (n - i >= 16) _mm512_storeu_ps(out + i, v);
        else _mm512_mask_storeu_ps(out + i, (__mmask16)((1u << (n - i)) - 1), v);
    }
}

LRC_AVX512 static void lrc_sr_run_avx512(const float *x, uint16_t *out, ptrdiff_t n, uint32_t k2,
                                         uint32_t e0)
{
    const __m512i key = _mm512_set1_epi32((int)k2), step = _mm512_set1_epi32(16);
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    __m512i e = _mm512_add_epi32(_mm512_set1_epi32((int)e0),
                                 _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                   14, 15));
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i h = _mm512_xor_si512(e, key);
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
        h = _mm512_mullo_epi32(h, _mm512_set1_epi32(0x21f0aaad));
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
        h = _mm512_mullo_epi32(h, _mm512_set1_epi32(0x735a2d97));
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
        const __m512i u = _mm512_maskz_loadu_epi32(k, x + i);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_srli_epi32(h, 16)), 16);
        r = _mm512_mask_mov_epi32(
            r, _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, magnitude), inf),
            _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
        _mm512_mask_cvtepi32_storeu_epi16(out + i, k, r);       /* vpmovdw: the low halves */
        e = _mm512_add_epi32(e, step);
    }
}

static void lrc_round_bf16_stochastic_avx512(const float *x, uint16_t *out, ptrdiff_t n,
                                             uint64_t key, int64_t start)
{
    lrc_sr_runs(lrc_sr_run_avx512, x, out, n, key, start);
}

LRC_Q8_BLOCK_DRIVERS(avx512, LRC_AVX512)

#undef LRC_AVX2
#undef LRC_AVX512
#endif /* LRC_X86_CONVERSIONS */

/* ---- Dispatch: the vector level of formats.h ---------------------------------------------- */

typedef struct {
    void (*quantize_blocks)(const float *x, int is_unsigned, uint8_t *codes, float *absmax,
                            ptrdiff_t n);
    void (*dequantize_blocks)(const uint8_t *codes, const float *absmax, int is_unsigned,
                              float *out, ptrdiff_t n);
    void (*round_bf16_stochastic)(const float *x, uint16_t *out, ptrdiff_t n, uint64_t key,
                                  int64_t start);
} lrc_compact_fns;

/* One row per level of lrc_conversion_table (LRC_CONVERT_PORTABLE, _AVX2, _AVX512). AVX2 has no
 * in-register lookup wide enough for the 256-entry map (its permutes take 8 entries) and its
 * gathers are slow on many CPUs: its level dequantizes with the portable loop. */
#define LRC_COMPACT_ROW(level) \
    {lrc_q8_quantize_blocks_##level, lrc_q8_dequantize_blocks_##level, \
     lrc_round_bf16_stochastic_##level}
#if LRC_X86_CONVERSIONS
static const lrc_compact_fns lrc_compact_table[3] = {
    LRC_COMPACT_ROW(portable), LRC_COMPACT_ROW(avx2), LRC_COMPACT_ROW(avx512)};
#else
static const lrc_compact_fns lrc_compact_table[1] = {LRC_COMPACT_ROW(portable)};
#endif
#undef LRC_COMPACT_ROW

/* Quantize x[0 .. n) (any n >= 0) in blocks of LRC_Q8_BLOCK elements from x[0], with the signed
 * or the unsigned map: codes[i], and absmax[b] for block b (ceil(n / 256) entries); the rules
 * at the top of this file. */
static inline void lrc_q8_quantize_blocks(const float *x, int is_unsigned, uint8_t *codes,
                                          float *absmax, ptrdiff_t n)
{
    if (lrc_q8_init() != 0) abort();    /* unreachable: the extension checked at import */
    lrc_compact_table[lrc_conversion_in_use()].quantize_blocks(x, is_unsigned, codes, absmax, n);
}

/* Quantize one block (0 <= n <= LRC_Q8_BLOCK elements); returns its absmax (0 for n = 0). */
static inline float lrc_q8_quantize(const float *x, int is_unsigned, uint8_t *codes, ptrdiff_t n)
{
    float absmax = 0.0f;
    lrc_q8_quantize_blocks(x, is_unsigned, codes, &absmax, n);
    return absmax;
}

/* Decode x[0 .. n) in blocks of LRC_Q8_BLOCK: out[i] = map[codes[i]] * absmax[i / 256]. */
static inline void lrc_q8_dequantize_blocks(const uint8_t *codes, const float *absmax,
                                            int is_unsigned, float *out, ptrdiff_t n)
{
    lrc_compact_table[lrc_conversion_in_use()].dequantize_blocks(codes, absmax, is_unsigned, out,
                                                                 n);
}

/* Decode one block: out[i] = map[codes[i]] * absmax (n <= LRC_Q8_BLOCK). */
static inline void lrc_q8_dequantize(const uint8_t *codes, float absmax, int is_unsigned,
                                     float *out, ptrdiff_t n)
{
    lrc_q8_dequantize_blocks(codes, &absmax, is_unsigned, out, n);
}

/* Round x[0 .. n) to bfloat16 stochastically with the rounding key `key`; x[0] is element
 * `start` (>= 0, start + n <= INT64_MAX) of its array. */
static inline void lrc_round_bf16_stochastic(const float *x, uint16_t *out, ptrdiff_t n,
                                             uint64_t key, int64_t start)
{
    lrc_compact_table[lrc_conversion_in_use()].round_bf16_stochastic(x, out, n, key, start);
}

#endif /* LRCORE_COMPACT_H */
