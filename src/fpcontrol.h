/* The calling thread's floating-point control (src/pool.h hands it to the workers). */
#ifndef LRCORE_FPCONTROL_H
#define LRCORE_FPCONTROL_H

#include <stdint.h>

/* A thread's floating-point control, which IEEE results depend on: the rounding mode and, on
 * x86 (MXCSR) and aarch64 (FPCR), whether subnormal results are flushed to zero and subnormal
 * operands read as zero. torch.set_flush_denormal(True), for one, sets them on the calling
 * thread only; a worker that computed without them would give other bits than the caller for
 * the chunks it happens to claim. Elsewhere the rounding mode (C99 fenv). */
#if defined(__x86_64__) || defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
typedef unsigned int lrc_fp_control;
#define LRC_FLUSH_TO_ZERO_BITS 0x8040u      /* MXCSR's FTZ (bit 15) and DAZ (bit 6) */
static inline lrc_fp_control lrc_fp_control_get(void) { return _mm_getcsr(); }
static inline void lrc_fp_control_set(lrc_fp_control c) { _mm_setcsr(c); }
#elif defined(__aarch64__)
#define LRC_FLUSH_TO_ZERO_BITS ((uint64_t)1 << 24)     /* FPCR's FZ */
typedef uint64_t lrc_fp_control;
static inline lrc_fp_control lrc_fp_control_get(void)
{
    uint64_t c;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(c));
    return c;
}
static inline void lrc_fp_control_set(lrc_fp_control c)
{
    __asm__ __volatile__("msr fpcr, %0" : : "r"(c));
}
#else
#include <fenv.h>
#define LRC_FLUSH_TO_ZERO_BITS 0                /* not reachable: only the rounding mode */
typedef int lrc_fp_control;
static inline lrc_fp_control lrc_fp_control_get(void) { return fegetround(); }
static inline void lrc_fp_control_set(lrc_fp_control c) { fesetround(c); }
#endif

/* Set (on != 0) or clear flush-to-zero and denormals-are-zero in the calling thread, as
 * torch.set_flush_denormal does; returns 0 where the control has no such bits (the tests'
 * hook, lrcore._kernels._set_flush_to_zero). */
static inline int lrc_set_flush_to_zero(int on)
{
    if (LRC_FLUSH_TO_ZERO_BITS == 0) return 0;
    const lrc_fp_control c = lrc_fp_control_get();
    const lrc_fp_control bits = (lrc_fp_control)LRC_FLUSH_TO_ZERO_BITS;
    lrc_fp_control_set(on ? (c | bits) : (c & ~bits));
    return 1;
}

#endif /* LRCORE_FPCONTROL_H */
