/* lrcore learning-rate schedules, evaluated in C from the step count.
 *
 * One struct describes any built-in schedule; lrc_schedule_value() is what the optimizer step
 * calls once per update (no Python call), and what the vectorized schedule(steps) of
 * lrcore/schedules.py runs, so a plotted value is the value the step uses. Formulas are
 * TensorFlow v1's decays / Keras 3's schedules; lrcore/schedules.py carries each one's
 * docstring and a numpy reference evaluation.
 */
#ifndef LRCORE_SCHEDULES_H
#define LRCORE_SCHEDULES_H

#include <math.h>
#include <stdint.h>

typedef enum {
    LRC_CONSTANT, LRC_PIECEWISE_CONSTANT, LRC_EXPONENTIAL_DECAY, LRC_NATURAL_EXP_DECAY,
    LRC_INVERSE_TIME_DECAY, LRC_POLYNOMIAL_DECAY, LRC_COSINE_DECAY, LRC_COSINE_DECAY_RESTARTS,
    LRC_LINEAR_COSINE_DECAY, LRC_NOISY_LINEAR_COSINE_DECAY, LRC_WARMUP
} lrc_schedule_kind;

typedef struct lrc_schedule {
    lrc_schedule_kind kind;
    double initial;          /* initial_learning_rate (Constant: learning_rate) */
    double steps;            /* decay_steps / first_decay_steps / warmup_steps */
    double rate;             /* decay_rate */
    double end;              /* end_learning_rate */
    double power;
    double alpha, beta, num_periods;
    double t_mul, m_mul;
    double initial_variance, variance_decay;
    int staircase;           /* exponential / natural-exp / inverse-time */
    int cycle;               /* polynomial */
    int linear;              /* warmup: linear ramp (1) or constant (0) */
    uint64_t seed;           /* noisy linear cosine */
    const double *boundaries;        /* piecewise: count boundaries, count + 1 values */
    const double *values;
    int64_t count;
    const struct lrc_schedule *inner;    /* warmup: the wrapped schedule */
} lrc_schedule;

#define LRC_PI 3.14159265358979323846

/* SplitMix64's finalizer: a bijective 64-bit mix, the basis of the counter-based generator. */
static inline uint64_t lrc_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* A standard normal draw that is a pure function of (seed, step): the counters 2·step and
 * 2·step + 1, offset by the mixed seed, hash to two 53-bit uniforms u1 ∈ (0, 1], u2 ∈ [0, 1),
 * and Box–Muller turns them into √(−2 ln u1)·cos(2π u2). Replays and resumed runs see the
 * same noise; no generator state exists. */
static inline double lrc_normal(uint64_t seed, int64_t step)
{
    const uint64_t base = lrc_mix64(seed) + 2u * (uint64_t)step;
    const double u1 = (double)((lrc_mix64(base) >> 11) + 1) * 0x1.0p-53;
    const double u2 = (double)(lrc_mix64(base + 1) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * LRC_PI * u2);
}

/* Start of SGDR restart i: F·(t_mul^i − 1)/(t_mul − 1), or F·i when t_mul = 1. */
static inline double lrc_restart_start(double first, double t_mul, double i)
{
    return t_mul == 1.0 ? first * i : first * (pow(t_mul, i) - 1.0) / (t_mul - 1.0);
}

/* p = step / decay_steps, floored when staircase. */
static inline double lrc_progress(const lrc_schedule *s, double step)
{
    const double p = step / s->steps;
    return s->staircase ? floor(p) : p;
}

static double lrc_schedule_value(const lrc_schedule *s, int64_t step_count)
{
    const double step = (double)step_count;
    switch (s->kind) {
    case LRC_CONSTANT:
        return s->initial;
    case LRC_PIECEWISE_CONSTANT: {
        /* values[i] where i = number of boundaries < step (right-inclusive intervals);
         * binary search over the increasing boundaries */
        int64_t lo = 0, hi = s->count;
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (s->boundaries[mid] < step) lo = mid + 1; else hi = mid;
        }
        return s->values[lo];
    }
    case LRC_EXPONENTIAL_DECAY:
        return s->initial * pow(s->rate, lrc_progress(s, step));
    case LRC_NATURAL_EXP_DECAY:
        return s->initial * exp(-s->rate * lrc_progress(s, step));
    case LRC_INVERSE_TIME_DECAY:
        return s->initial / (1.0 + s->rate * lrc_progress(s, step));
    case LRC_POLYNOMIAL_DECAY: {
        double clipped = step, span = s->steps;
        if (s->cycle)
            span = s->steps * fmax(1.0, ceil(step / s->steps));
        else
            clipped = fmin(step, s->steps);
        return (s->initial - s->end) * pow(1.0 - clipped / span, s->power) + s->end;
    }
    case LRC_COSINE_DECAY: {
        const double done = fmin(step, s->steps) / s->steps;
        return s->initial * ((1.0 - s->alpha) * 0.5 * (1.0 + cos(LRC_PI * done)) + s->alpha);
    }
    case LRC_COSINE_DECAY_RESTARTS: {
        /* restart i: the largest integer with start(i) <= step. The log gives a guess that
         * rounding can put one off near a restart; the loops settle it on the exact
         * inequality. */
        double i;
        if (s->t_mul == 1.0) {
            i = floor(step / s->steps);
        } else {
            i = floor(log1p(step / s->steps * (s->t_mul - 1.0)) / log(s->t_mul));
            while (i > 0 && lrc_restart_start(s->steps, s->t_mul, i) > step) i -= 1.0;
            while (lrc_restart_start(s->steps, s->t_mul, i + 1.0) <= step) i += 1.0;
        }
        const double length = s->steps * pow(s->t_mul, i);
        const double done = (step - lrc_restart_start(s->steps, s->t_mul, i)) / length;
        const double cosine = pow(s->m_mul, i) * 0.5 * (1.0 + cos(LRC_PI * done));
        return s->initial * ((1.0 - s->alpha) * cosine + s->alpha);
    }
    case LRC_LINEAR_COSINE_DECAY:
    case LRC_NOISY_LINEAR_COSINE_DECAY: {
        const double clipped = fmin(step, s->steps);
        double linear = (s->steps - clipped) / s->steps;
        if (s->kind == LRC_NOISY_LINEAR_COSINE_DECAY) {
            const double variance = s->initial_variance / pow(1.0 + clipped, s->variance_decay);
            linear += sqrt(variance) * lrc_normal(s->seed, step_count);
        }
        const double cosine = 0.5 * (1.0 + cos(2.0 * LRC_PI * s->num_periods * clipped / s->steps));
        return s->initial * ((s->alpha + linear) * cosine + s->beta);
    }
    case LRC_WARMUP:
        if (step < s->steps) {
            if (!s->linear) return s->initial;
            const double target = lrc_schedule_value(s->inner, 0);
            return s->initial + (target - s->initial) * (step / s->steps);
        }
        return lrc_schedule_value(s->inner, step_count - (int64_t)s->steps);
    }
    return NAN;
}

#endif /* LRCORE_SCHEDULES_H */
