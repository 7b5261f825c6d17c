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
    LRC_LINEAR_COSINE_DECAY, LRC_NOISY_LINEAR_COSINE_DECAY, LRC_WARMUP,
    LRC_LINEAR, LRC_INVERSE_SQRT, LRC_WARMUP_STABLE_DECAY,
    LRC_ONE_CYCLE, LRC_CYCLIC, LRC_SEQUENCE
} lrc_schedule_kind;

/* Shapes of WarmupStableDecay's decay phase, g(p) for the fraction p of it elapsed. */
enum { LRC_DECAY_LINEAR, LRC_DECAY_COSINE, LRC_DECAY_1_SQRT };

typedef struct lrc_schedule {
    lrc_schedule_kind kind;
    double initial;          /* initial_learning_rate (Constant: learning_rate) */
    double steps;            /* decay_steps / first_decay_steps */
    int64_t warmup_steps;    /* warmup */
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
    double peak;             /* InverseSqrt / WarmupStableDecay: peak_learning_rate;
                              * CosineDecay: warmup_target (when has_target) */
    double timescale;        /* InverseSqrt: T of the decay √(T/(s + T − W)) */
    int64_t stable_steps;    /* WarmupStableDecay */
    int decay_shape;         /* WarmupStableDecay: LRC_DECAY_* */
    int has_target;          /* CosineDecay: a warmup to warmup_target (Keras 3) */
    /* one-cycle, cyclic, sequence */
    double lr_low, lr_high, lr_min;  /* OneCycle: max/div, max, max/div/final_div;
                                      * Cyclic: base, max */
    double ends[3];                  /* OneCycle: torch's phase end steps (floats) */
    int phases;                      /* OneCycle: 2 or 3 */
    int anneal_cos;                  /* OneCycle: cosine (1) or linear (0) anneal */
    double total_size, step_ratio, gamma;    /* Cyclic */
    int cyclic_mode;                 /* Cyclic: 0 triangular, 1 triangular2, 2 exp_range */
    const struct lrc_schedule *const *pieces;   /* Sequence: count + 1 pieces */
    const int64_t *starts;                      /* Sequence: count boundaries, ascending */
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

/* ---- Exact arithmetic for the step-indexed schedules -------------------------------------
 * Double-double (dd) values hi + lo with error-free transformations: two_sum, two_prod (fma).
 * lrcore/schedules.py mirrors every function below operation by operation (Dekker's product
 * in place of fma: both give the exact product), so both backends find the same indices. */
typedef struct { double hi, lo; } lrc_dd;

static inline lrc_dd lrc_two_sum(double a, double b)
{
    const double s = a + b, bb = s - a;
    return (lrc_dd){s, (a - (s - bb)) + (b - bb)};
}

static inline lrc_dd lrc_quick_two_sum(double a, double b)   /* |a| >= |b| */
{
    const double s = a + b;
    return (lrc_dd){s, b - (s - a)};
}

static inline lrc_dd lrc_two_prod(double a, double b)
{
    const double p = a * b;
    return (lrc_dd){p, fma(a, b, -p)};
}

static inline lrc_dd lrc_dd_add(lrc_dd a, lrc_dd b)
{
    lrc_dd s = lrc_two_sum(a.hi, b.hi);
    const lrc_dd t = lrc_two_sum(a.lo, b.lo);
    s = lrc_quick_two_sum(s.hi, s.lo + t.hi);
    return lrc_quick_two_sum(s.hi, s.lo + t.lo);
}

static inline lrc_dd lrc_dd_mul(lrc_dd a, lrc_dd b)
{
    const lrc_dd p = lrc_two_prod(a.hi, b.hi);
    return lrc_quick_two_sum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi) + a.lo * b.lo);
}

/* An int64 >= 0 as an exact dd: its top 31 bits and bottom 32 bits are each exact doubles. */
static inline lrc_dd lrc_dd_from_int(int64_t s)
{
    return lrc_two_sum((double)(s >> 32) * 0x1p32, (double)(s & 0xFFFFFFFF));
}

#define LRC_DD_BIG 0x1p200      /* past any step: sums/powers beyond it saturate here */
#define LRC_MAX_RESTART 0x1p53  /* construction keeps every restart index below 2**51 */

/* G_i = 1 + t + ... + t^(i−1) (and T = t^i) for 0 <= i <= 2**53, by binary powering over the
 * bits of i: G_2k = G_k·(1 + t^k), G_k+1 = G_k + t^k. Every term is positive, so nothing
 * cancels: each dd operation has relative error O(2^-104). When G_i·F is an integer step (a
 * tie) every quantity G_i's evaluation uses is a dyadic of at most ~96 significant bits
 * (first_decay_steps >= 1), which dd holds exactly, so ties come out exact. Values past 2**200
 * saturate there (they only ever mean "beyond every step"). */
static inline void lrc_geometric(double t, int64_t i, lrc_dd *G, lrc_dd *T)
{
    lrc_dd g = {0.0, 0.0}, p = {1.0, 0.0};
    int top = 0;                /* leading zero bits would leave g = 0, p = 1 unchanged */
    while (top < 62 && (i >> (top + 1))) top++;
    for (int bit = top; bit >= 0; bit--) {
        g = lrc_dd_mul(g, lrc_dd_add(p, (lrc_dd){1.0, 0.0}));
        p = lrc_dd_mul(p, p);
        if ((i >> bit) & 1) {
            g = lrc_dd_add(g, p);
            p = lrc_dd_mul(p, (lrc_dd){t, 0.0});
        }
        if (!(g.hi < LRC_DD_BIG)) g = (lrc_dd){LRC_DD_BIG, 0.0};
        if (!(p.hi < LRC_DD_BIG)) p = (lrc_dd){LRC_DD_BIG, 0.0};
    }
    *G = g;
    *T = p;
}

/* s − F·G_i as a dd (its sign decides whether restart i has started at step s); T = t^i. */
static inline lrc_dd lrc_restart_gap(double first, double t, int64_t i, int64_t s, lrc_dd *T)
{
    lrc_dd G;
    lrc_geometric(t, i, &G, T);
    if (i == 0) return lrc_dd_from_int(s);
    if (first * G.hi > 0x1p64) return (lrc_dd){-1.0, 0.0};   /* far past any step */
    lrc_dd p = lrc_two_prod(first, G.hi);
    p = lrc_quick_two_sum(p.hi, p.lo + first * G.lo);
    return lrc_dd_add(lrc_dd_from_int(s), (lrc_dd){-p.hi, -p.lo});
}

/* q = ⌊s/D⌋ for D >= 1 (so q <= s fits int64), and the remainder s − D·q = D·num/den exactly,
 * with comp = den − num (computed without cancellation). D = n·2^k with n < 2^53: for k < 0,
 * s·2^-k = q·n + r by long division in 8-bit chunks (r·2^8 < 2^61), num/den = r/n. */
static inline int64_t lrc_divmod(double D, int64_t s, double *num, double *den, double *comp)
{
    if (D >= 0x1p63) {                  /* q = 0; D − s = (D − 2^63) + (2^63 − s), both exact */
        *num = (double)s;
        *den = D;
        *comp = (D - 0x1p63) + (double)((UINT64_C(1) << 63) - (uint64_t)s);
        return 0;
    }
    int e;
    const double m = frexp(D, &e);
    int64_t n = (int64_t)ldexp(m, 53);
    int k = e - 53;
    while (k < 0 && !(n & 1)) { n >>= 1; k++; }
    if (k > 0) { n <<= k; k = 0; }      /* an integer below 2^63 */
    int64_t q = s / n, r = s % n;
    for (int shift = -k; shift > 0; shift -= 8) {
        const int c = shift < 8 ? shift : 8;
        r <<= c;
        q = (q << c) + r / n;
        r %= n;
    }
    *num = (double)r;
    *den = (double)n;
    *comp = (double)(n - r);
    return q;
}

/* SGDR at step s: restart i is the largest integer with F·G_i <= s (F·(t^i − 1)/(t − 1) as a
 * sum, F = first_decay_steps, t = t_mul; i = ⌊s/F⌋ exactly when t = 1); f = (s − F·G_i)/(F·t^i),
 * computed from the dd gap, so nothing cancels. Returns f, sets *index. The search starts at the
 * log's guess and probes its neighbours; after 8 probes it bisects [0, 2^53): bounded time. */
static inline double lrc_restart(double first, double t, int64_t s, double *index)
{
    if (t == 1.0) {
        double num, den, comp;
        *index = (double)lrc_divmod(first, s, &num, &den, &comp);
        return num / den;
    }
    const double x = (double)s * (t - 1.0) / first;   /* t^i ≈ 1 + x; overflow: through logs */
    const double log_x = isinf(x) ? log((double)s) + log(t - 1.0) - log(first) : log1p(x);
    const double guess = floor(log_x / log1p(t - 1.0));
    int64_t lo = 0, hi = (int64_t)LRC_MAX_RESTART;  /* gap(lo) >= 0 > gap(hi) */
    int64_t probe = !(guess >= 1.0) ? 1 : guess >= LRC_MAX_RESTART - 1.0
        ? (int64_t)LRC_MAX_RESTART - 1 : (int64_t)guess;
    lrc_dd T, T_lo = {1.0, 0.0}, gap_lo = lrc_dd_from_int(s);
    for (int k = 0; hi - lo > 1; k++) {
        if (k >= 8) probe = lo + (hi - lo) / 2;
        const lrc_dd gap = lrc_restart_gap(first, t, probe, s, &T);
        const int started = gap.hi >= 0.0;
        if (started) { lo = probe; gap_lo = gap; T_lo = T; } else hi = probe;
        probe = started ? lo + 1 : hi - 1;
    }
    const lrc_dd gap = gap_lo;
    T = T_lo;
    *index = (double)lo;
    return (gap.hi + gap.lo) / (first * T.hi);
}

/* p = step / decay_steps, floored when staircase. */
static inline double lrc_progress(const lrc_schedule *s, double step)
{
    const double p = step / s->steps;
    return s->staircase ? floor(p) : p;
}

static double lrc_schedule_value(const lrc_schedule *s, int64_t step_count);

/* torch.optim.lr_scheduler.OneCycleLR's _annealing_cos / _annealing_linear, operation for
 * operation (built with -ffp-contract=off, so no fused multiply-add changes a rounding). */
static inline double lrc_anneal(int cosine, double start, double end, double pct)
{
    if (cosine) {
        const double cos_out = cos(LRC_PI * pct) + 1.0;
        return end + (start - end) / 2.0 * cos_out;
    }
    return (end - start) * pct + start;
}

/* OneCycle, Cyclic and Sequence: each mirrors its reference's arithmetic in the same order
 * (torch's get_lr, optax's join_schedules), so the doubles are torch's doubles. */
static double lrc_schedule_value_cyclic(const lrc_schedule *s, int64_t step_count)
{
    switch (s->kind) {
    case LRC_ONE_CYCLE: {
        /* steps past the last one (total_steps − 1) hold its rate */
        const int64_t last = (int64_t)s->ends[s->phases - 1];
        const double n = (double)(step_count < last ? step_count : last);
        double start_step = 0.0;
        for (int i = 0; i < s->phases; i++) {
            const double end_step = s->ends[i];
            if (n <= end_step || i == s->phases - 1) {
                const double pct = (n - start_step) / (end_step - start_step);
                double from, to;
                if (s->phases == 2) {
                    from = i == 0 ? s->lr_low : s->lr_high;
                    to = i == 0 ? s->lr_high : s->lr_min;
                } else {
                    from = i == 1 ? s->lr_high : s->lr_low;
                    to = i == 0 ? s->lr_high : i == 1 ? s->lr_low : s->lr_min;
                }
                return lrc_anneal(s->anneal_cos, from, to, pct);
            }
            start_step = end_step;
        }
        return NAN;
    }
    case LRC_CYCLIC: {
        const double n = (double)step_count;
        const double q = n / s->total_size;
        const double cycle = floor(1.0 + q);
        const double x = 1.0 + q - cycle;
        const double scale = x <= s->step_ratio ? x / s->step_ratio
                                                : (x - 1.0) / (s->step_ratio - 1.0);
        const double base_height = (s->lr_high - s->lr_low) * scale;
        double factor = 1.0;
        if (s->cyclic_mode == 1) factor = 1.0 / pow(2.0, cycle - 1.0);
        else if (s->cyclic_mode == 2) factor = pow(s->gamma, n);
        return s->lr_low + base_height * factor;
    }
    case LRC_SEQUENCE: {
        /* piece i = number of boundaries <= step, at step − boundaries[i − 1]; nesting is
         * bounded at construction (32 levels) */
        int64_t lo = 0, hi = s->count;
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (s->starts[mid] <= step_count) lo = mid + 1; else hi = mid;
        }
        return lrc_schedule_value(s->pieces[lo], lo ? step_count - s->starts[lo - 1] : step_count);
    }
    default:
        return NAN;
    }
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
        double base;            /* 1 − s'/D' */
        if (s->cycle) {
            /* D' = D·c, c = max(1, ⌈s/D⌉) of the exact quotient: base = (D·c − s)/(D·c) */
            double num, den, comp;
            const int64_t q = lrc_divmod(s->steps, step_count, &num, &den, &comp);
            if (step_count == 0) base = 1.0;
            else if (num == 0.0) base = 0.0;
            else base = comp / (den * (double)(q + 1));
        } else {
            base = 1.0 - fmin(step, s->steps) / s->steps;
        }
        return (s->initial - s->end) * pow(base, s->power) + s->end;
    }
    case LRC_COSINE_DECAY: {
        if (s->has_target) {    /* Keras 3: step clamped to W + D, warmup then decay */
            const double W = (double)s->warmup_steps;
            const double clamped = fmin(step, s->steps + W);
            if (clamped < W)
                return (s->peak - s->initial) * (clamped / W) + s->initial;
            const double decayed = 0.5 * (1.0 + cos(LRC_PI * ((clamped - W) / s->steps)));
            return s->peak * ((1.0 - s->alpha) * decayed + s->alpha);
        }
        const double done = fmin(step, s->steps) / s->steps;
        return s->initial * ((1.0 - s->alpha) * 0.5 * (1.0 + cos(LRC_PI * done)) + s->alpha);
    }
    case LRC_COSINE_DECAY_RESTARTS: {
        double i;
        const double done = lrc_restart(s->steps, s->t_mul, step_count, &i);
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
    case LRC_WARMUP:            /* nesting is bounded at construction (32 levels) */
        if (step_count < s->warmup_steps) {
            if (!s->linear) return s->initial;
            const double target = lrc_schedule_value(s->inner, 0);
            return s->initial + (target - s->initial) * (step / (double)s->warmup_steps);
        }
        return lrc_schedule_value(s->inner, step_count - s->warmup_steps);
    case LRC_LINEAR:            /* the end rate itself from D on */
        if (step >= s->steps) return s->end;
        return s->initial + (s->end - s->initial) * (step / s->steps);
    case LRC_INVERSE_SQRT:      /* Hugging Face's operations: peak / √((s + T − W)/T) */
        if (step_count < s->warmup_steps)
            return s->peak * (step / (double)s->warmup_steps);
        return s->peak * (1.0 / sqrt((step + (s->timescale - (double)s->warmup_steps))
                                     / s->timescale));
    case LRC_WARMUP_STABLE_DECAY: {
        /* phases by differences of int64 counts: W + S + D < 2**63 is checked at construction */
        if (step_count < s->warmup_steps)
            return s->initial + (s->peak - s->initial) * (step / (double)s->warmup_steps);
        const int64_t into_stable = step_count - s->warmup_steps;
        if (into_stable < s->stable_steps) return s->peak;
        const int64_t into_decay = into_stable - s->stable_steps;
        if ((double)into_decay >= s->steps) return s->end;
        const double p = (double)into_decay / s->steps;
        double g;
        switch (s->decay_shape) {
        case LRC_DECAY_COSINE: g = 0.5 * (1.0 + cos(LRC_PI * p)); break;
        case LRC_DECAY_1_SQRT: g = 1.0 - sqrt(p); break;
        default: g = 1.0 - p;
        }
        return s->end + (s->peak - s->end) * g;
    }
    case LRC_ONE_CYCLE:
    case LRC_CYCLIC:
    case LRC_SEQUENCE:
        return lrc_schedule_value_cyclic(s, step_count);
    }
    return NAN;
}

#endif /* LRCORE_SCHEDULES_H */
