/* Element loops of one combination of compute type and storage; kernels.h includes this
 * once per instantiation (no include guard on purpose), with
 *   LRC_REAL           the type the update computes in; LRC_BITS its unsigned integer;
 *                      LRC_SQRT its square root; LRC_NAME(name) the suffix of each function
 *   LRC_P, LRC_G, LRC_B               how params, grads and buffers are stored
 *   LRC_LOAD_P(x), LRC_STORE_P(x)     storage <-> LRC_REAL (likewise _G (load only), _B)
 *   LRC_SPLIT_SCALE    1: each loop also gets a version for a gradient factor of 1 (LRC_SCALED)
 *   LRC_GUARD_UNDERFLOW  1: Adam's loops can run the underflow guard (see adam)
 * Each update is written once: it loads every operand, computes, and stores each result
 * once, rounded to its storage; a value used again within the update is the computed one,
 * not a re-read of memory, so half-precision storage gets the math of float32 params (as
 * torch's fused kernels compute in opmath). */

/* x with its sign bit flipped when flip is the sign mask (maximize), else x: exactly numpy's
 * negative(), NaNs included (−NaN for +NaN), which a multiply by −1 is not. */
LRC_ALWAYS_INLINE LRC_REAL LRC_NAME(flip_sign)(LRC_REAL x, LRC_BITS flip)
{
    LRC_BITS bits;
    memcpy(&bits, &x, sizeof bits);
    bits ^= flip;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* x, or the quiet NaN x·1 gives when x is a signalling NaN. */
LRC_ALWAYS_INLINE LRC_REAL LRC_NAME(quieted)(LRC_REAL x)
{
    LRC_BITS bits;
    memcpy(&bits, &x, sizeof bits);
    bits |= x != x ? (LRC_BITS)1 << (sizeof(LRC_BITS) == 4 ? 22 : 51) : 0;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* The sign mask when maximizing (the gradient is negated), else 0. */
LRC_ALWAYS_INLINE LRC_BITS LRC_NAME(maximize_mask)(const lrc_hyper *h)
{
    return h->maximize ? (LRC_BITS)1 << (8 * sizeof(LRC_BITS) - 1) : 0;
}

/* The gradient as the update uses it: g·factor (loss scale and clipping, API.md), then its
 * sign flipped when maximizing. `scaled` is a constant of each loop version: 0 skips the
 * multiply when the factor is exactly 1, because a multiply with a subnormal operand costs a
 * microcode assist without flush-to-zero, and training leaves subnormal gradients
 * (benchmarks/subnormal_step.py). x·1 is x, but for a signalling NaN, which it quiets: every
 * use of d is arithmetic, which quiets it alike, except SGD's first momentum step, which
 * stores d and quiets it itself (quieted). */
#define LRC_GRAD(i) LRC_NAME(flip_sign)(scaled ? LRC_LOAD_G(g[i]) * gf : LRC_LOAD_G(g[i]), flip)

/* Run `call` with `scaled` a compile-time constant: a version without the multiply when the
 * factor is 1, if this instantiation's gradients can be subnormal in its compute type
 * (LRC_SPLIT_SCALE: float32-range grads; float16 grads widen to normal float32 values and
 * float64 subnormals are below 2.3e-308), else the one version with it. */
#define LRC_SCALED(call)                                                                   \
    if (LRC_SPLIT_SCALE && gf == (LRC_REAL)1) { const int scaled = 0; call; }              \
    else { const int scaled = 1; call; }

/* A running average moved toward x with weight w, as torch.optim moves Adam's m and centered
 * RMSprop's average (torch's lerp): a + w·(x − a) when w < 0.5 (low), else x − (x − a)·w1
 * with w1 = 1 − w rounded. low is a constant of the call. Against β·a + w·x, a subnormal
 * gradient meets one multiply fewer (each costs a microcode assist without flush-to-zero). */
LRC_ALWAYS_INLINE LRC_REAL LRC_NAME(lerp)(LRC_REAL a, LRC_REAL x, LRC_REAL w, LRC_REAL w1,
                                          const int low)
{
    return low ? a + w * (x - a) : x - (x - a) * w1;
}

/* p -= lr * d, where d is the SGD direction of torch.optim.SGD:
 *   d = ±g (+ wd·p);  b = d on the first step, else b = momentum·b + (1 − dampening)·d;
 *   d = d + momentum·b (nesterov) or b.
 * has_wd and mode are constants at every call site of this forced-inline function, so each
 * combination compiles to its own branch-free, vectorizable loop (the same holds for the
 * flags of every *_loop below). */
LRC_ALWAYS_INLINE void LRC_NAME(sgd_loop)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT b,
    lrc_index n, LRC_REAL lr, LRC_REAL gf, const int scaled, LRC_BITS flip, LRC_REAL wd,
    LRC_REAL mom, LRC_REAL damp1, const int has_wd, const int mode)
{
    for (lrc_index i = 0; i < n; i++) {
        LRC_REAL d = LRC_GRAD(i);
        const LRC_REAL pi = LRC_LOAD_P(p[i]);
        if (has_wd) d = d + wd * pi;
        LRC_REAL bi;
        switch (mode) {
        case LRC_MOM_FIRST:          b[i] = LRC_STORE_B(scaled ? d : LRC_NAME(quieted)(d)); break;
        case LRC_MOM_FIRST_NESTEROV:
            b[i] = LRC_STORE_B(scaled ? d : LRC_NAME(quieted)(d)); d = d + mom * d; break;
        case LRC_MOM_HEAVY_BALL:
            bi = mom * LRC_LOAD_B(b[i]) + damp1 * d; b[i] = LRC_STORE_B(bi); d = bi; break;
        case LRC_MOM_NESTEROV:
            bi = mom * LRC_LOAD_B(b[i]) + damp1 * d; b[i] = LRC_STORE_B(bi); d = d + mom * bi;
            break;
        default: break;
        }
        p[i] = LRC_STORE_P(pi - lr * d);
    }
}

#define LRC_SGD_MODE(has_wd, m) \
    LRC_NAME(sgd_loop)(p, g, b, n, lr, gf, scaled, flip, wd, mom, damp1, has_wd, m)
#define LRC_SGD_MODES(has_wd)                                                              \
    switch (mode) {                                                                        \
    case LRC_MOM_NONE:           LRC_SGD_MODE(has_wd, LRC_MOM_NONE); break;                \
    case LRC_MOM_FIRST:          LRC_SGD_MODE(has_wd, LRC_MOM_FIRST); break;               \
    case LRC_MOM_FIRST_NESTEROV: LRC_SGD_MODE(has_wd, LRC_MOM_FIRST_NESTEROV); break;      \
    case LRC_MOM_HEAVY_BALL:     LRC_SGD_MODE(has_wd, LRC_MOM_HEAVY_BALL); break;          \
    default:                     LRC_SGD_MODE(has_wd, LRC_MOM_NESTEROV); break;            \
    }

LRC_ALWAYS_INLINE void LRC_NAME(sgd)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT b,
    LRC_B *unused1, LRC_B *unused2, lrc_index n, const lrc_hyper *h, int mode)
{
    (void)unused1; (void)unused2;
    const LRC_REAL lr = (LRC_REAL)h->lr, gf = (LRC_REAL)h->grad_factor;
    const LRC_BITS flip = LRC_NAME(maximize_mask)(h);
    const LRC_REAL wd = (LRC_REAL)h->weight_decay;
    const LRC_REAL mom = (LRC_REAL)h->momentum;
    const LRC_REAL damp1 = (LRC_REAL)(1.0 - h->dampening);
    if (h->weight_decay != 0.0) {
        LRC_SCALED(LRC_SGD_MODES(1))
    } else {
        LRC_SCALED(LRC_SGD_MODES(0))
    }
}

#undef LRC_SGD_MODES
#undef LRC_SGD_MODE

/* Adagrad (torch.optim.Adagrad), clr = lr / (1 + (t − 1)·lr_decay) computed by the caller:
 *   g ← ±g (+ wd·p);  s ← s + g·g;  p ← p − (clr·g) / (√s + eps). */
LRC_ALWAYS_INLINE void LRC_NAME(adagrad_loop)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT s,
    lrc_index n, LRC_REAL clr, LRC_REAL gf, const int scaled, LRC_BITS flip, LRC_REAL wd,
    LRC_REAL eps, const int has_wd)
{
    for (lrc_index i = 0; i < n; i++) {
        LRC_REAL d = LRC_GRAD(i);
        const LRC_REAL pi = LRC_LOAD_P(p[i]);
        if (has_wd) d = d + wd * pi;
        const LRC_REAL si = LRC_LOAD_B(s[i]) + d * d;
        s[i] = LRC_STORE_B(si);
        p[i] = LRC_STORE_P(pi - (clr * d) / (LRC_SQRT(si) + eps));
    }
}

LRC_ALWAYS_INLINE void LRC_NAME(adagrad)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT s,
    LRC_B *unused1, LRC_B *unused2, lrc_index n, const lrc_hyper *h, double clr)
{
    (void)unused1; (void)unused2;
    const LRC_BITS flip = LRC_NAME(maximize_mask)(h);
    const LRC_REAL gf = (LRC_REAL)h->grad_factor;
    const LRC_REAL wd = (LRC_REAL)h->weight_decay, eps = (LRC_REAL)h->eps;
    if (h->weight_decay != 0.0) {
        LRC_SCALED(LRC_NAME(adagrad_loop)(p, g, s, n, (LRC_REAL)clr, gf, scaled, flip, wd, eps, 1))
    } else {
        LRC_SCALED(LRC_NAME(adagrad_loop)(p, g, s, n, (LRC_REAL)clr, gf, scaled, flip, wd, eps, 0))
    }
}

/* RMSprop (torch.optim.RMSprop):
 *   g ← ±g (+ wd·p);  v ← α·v + ((1 − α)·g)·g;
 *   centered: a ← lerp(a, g, 1 − α),  d = √(v − a·a) + eps;  else d = √v + eps;
 *   momentum: b ← momentum·b + g/d,  p ← p − lr·b;  else p ← p − (lr·g)/d. */
LRC_ALWAYS_INLINE void LRC_NAME(rmsprop_loop)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT v,
    LRC_B *LRC_RESTRICT a, LRC_B *LRC_RESTRICT b, lrc_index n,
    LRC_REAL lr, LRC_REAL gf, const int scaled, LRC_BITS flip, LRC_REAL wd, LRC_REAL alpha,
    LRC_REAL alpha1, LRC_REAL alpha1_1, const int low, LRC_REAL eps, LRC_REAL mom, const int has_wd,
    const int centered, const int has_momentum)
{
    for (lrc_index i = 0; i < n; i++) {
        LRC_REAL d = LRC_GRAD(i);
        const LRC_REAL pi = LRC_LOAD_P(p[i]);
        if (has_wd) d = d + wd * pi;
        const LRC_REAL vi = alpha * LRC_LOAD_B(v[i]) + (alpha1 * d) * d;
        v[i] = LRC_STORE_B(vi);
        LRC_REAL denom;
        if (centered) {
            const LRC_REAL ai = LRC_NAME(lerp)(LRC_LOAD_B(a[i]), d, alpha1, alpha1_1, low);
            a[i] = LRC_STORE_B(ai);
            denom = LRC_SQRT(vi - ai * ai) + eps;
        } else {
            denom = LRC_SQRT(vi) + eps;
        }
        if (has_momentum) {
            const LRC_REAL bi = mom * LRC_LOAD_B(b[i]) + d / denom;
            b[i] = LRC_STORE_B(bi);
            p[i] = LRC_STORE_P(pi - lr * bi);
        } else {
            p[i] = LRC_STORE_P(pi - (lr * d) / denom);
        }
    }
}

LRC_ALWAYS_INLINE void LRC_NAME(rmsprop)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT v,
    LRC_B *LRC_RESTRICT a, LRC_B *LRC_RESTRICT b, lrc_index n, const lrc_hyper *h)
{
    const LRC_REAL lr = (LRC_REAL)h->lr, gf = (LRC_REAL)h->grad_factor;
    const LRC_BITS flip = LRC_NAME(maximize_mask)(h);
    const LRC_REAL wd = (LRC_REAL)h->weight_decay, eps = (LRC_REAL)h->eps;
    const LRC_REAL alpha = (LRC_REAL)h->alpha, alpha1 = (LRC_REAL)(1.0 - h->alpha);
    const LRC_REAL alpha1_1 = (LRC_REAL)1 - alpha1;
    const int low = alpha1 < (LRC_REAL)0.5;
    const LRC_REAL mom = (LRC_REAL)h->momentum;
    const int flags = (h->weight_decay != 0.0) | (h->centered ? 2 : 0) | (h->momentum != 0.0 ? 4 : 0);
#define LRC_RMSPROP_CASE(f) \
    case f: LRC_NAME(rmsprop_loop)(p, g, v, a, b, n, lr, gf, scaled, flip, wd, alpha, alpha1, \
                                   alpha1_1, low, eps, mom, (f) & 1, ((f) >> 1) & 1,      \
                                   ((f) >> 2) & 1);                                        \
            break;
#define LRC_RMSPROP_CASES                                                                  \
    switch (flags) {                                                                       \
    LRC_RMSPROP_CASE(0) LRC_RMSPROP_CASE(1) LRC_RMSPROP_CASE(2) LRC_RMSPROP_CASE(3)        \
    LRC_RMSPROP_CASE(4) LRC_RMSPROP_CASE(5) LRC_RMSPROP_CASE(6) LRC_RMSPROP_CASE(7)        \
    }
    LRC_SCALED(LRC_RMSPROP_CASES)
#undef LRC_RMSPROP_CASES
#undef LRC_RMSPROP_CASE
}

/* 1 when x is nonzero and |x| < below: a gradient whose products may leave the normal range. */
LRC_ALWAYS_INLINE int LRC_NAME(tiny)(LRC_REAL x, LRC_REAL below)
{
    return (LRC_FABS(x) < below) & (x != (LRC_REAL)0);
}

/* Adam / AdamW (torch.optim.Adam, AdamW), with step_size = lr / (1 − β1^t) and
 * inv_bc2_sqrt = 1 / √(1 − β2^t) computed by the caller:
 *   g ← ±g;  L2: g ← g + wd·p;  decoupled (AdamW): p ← p·(1 − lr·wd);
 *   m ← lerp(m, g, 1 − β1);  v ← β2·v + ((1 − β2)·g)·g;
 *   v̂ = max(vmax, v) → vmax (amsgrad, NaN-propagating like torch.maximum) or v;
 *   p ← p − (step_size·m) / (√v̂·inv_bc2_sqrt + eps). */
/* ahead (a constant): also return whether one of the n gradients after these is tiny;
 * careful (a constant): form (1 − β2)·g and its product with g as exact float64 products
 * rounded once to LRC_REAL (multiplied by `one`, an exact 1.0 the compiler cannot see, so
 * that it does not shorten them back into LRC_REAL multiplies): the same bits without the
 * microcode assist of a subnormal operand or result (see adam). */
LRC_ALWAYS_INLINE int LRC_NAME(adam_loop)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT m,
    LRC_B *LRC_RESTRICT v, LRC_B *LRC_RESTRICT vmax, lrc_index n,
    LRC_REAL step_size, LRC_REAL inv_bc2_sqrt, LRC_REAL gf, const int scaled, LRC_BITS flip,
    LRC_REAL wd, LRC_REAL decay, LRC_REAL b1c, LRC_REAL b1c_1, const int low, LRC_REAL b2,
    LRC_REAL b2c, LRC_REAL eps, const int wd_mode, const int amsgrad, const int careful,
    const int ahead, LRC_REAL tiny_below, double one)
{
    int tiny_ahead = 0;
    for (lrc_index i = 0; i < n; i++) {
        LRC_REAL d = LRC_GRAD(i);
        LRC_REAL pi = LRC_LOAD_P(p[i]);
        if (wd_mode == LRC_WD_L2) d = d + wd * pi;
        if (wd_mode == LRC_WD_DECOUPLED) pi = pi * decay;
        const LRC_REAL mi = LRC_NAME(lerp)(LRC_LOAD_B(m[i]), d, b1c, b1c_1, low);
        LRC_REAL vi;
        if (careful) {
            const LRC_REAL x = (LRC_REAL)((double)b2c * (double)d * one);
            vi = b2 * LRC_LOAD_B(v[i]) + (LRC_REAL)((double)x * (double)d * one);
        } else {
            vi = b2 * LRC_LOAD_B(v[i]) + (b2c * d) * d;
        }
        if (ahead) tiny_ahead |= LRC_NAME(tiny)(LRC_LOAD_G(g[i + n]), tiny_below);
        m[i] = LRC_STORE_B(mi);
        v[i] = LRC_STORE_B(vi);
        LRC_REAL vh = vi;
        if (amsgrad) {
            const LRC_REAL old = LRC_LOAD_B(vmax[i]);
            vh = (old >= vh || old != old) ? old : vh;
            vmax[i] = LRC_STORE_B(vh);
        }
        p[i] = LRC_STORE_P(pi - (step_size * mi) / (LRC_SQRT(vh) * inv_bc2_sqrt + eps));
    }
    return tiny_ahead;
}

/* 1 when one of g[0 .. n) is tiny. */
LRC_ALWAYS_INLINE int LRC_NAME(any_tiny)(const LRC_G *LRC_RESTRICT g, lrc_index n,
                                         LRC_REAL below)
{
    int any = 0;
    for (lrc_index i = 0; i < n; i++) any |= LRC_NAME(tiny)(LRC_LOAD_G(g[i]), below);
    return any;
}

/* The underflow guard (guard: a constant, set at the vector levels where it pays): a gradient
 * g below about √(smallest normal / (1 − β2)) (3.4e-18 in float32 with β2 = 0.999), which
 * trained networks produce, makes (1 − β2)·g·g a subnormal number, and every vector multiply
 * that produces or reads one takes a microcode assist of about a hundred cycles (torch's fused
 * step takes none there: benchmarks/subnormal_step.py). With the guard, the loop
 * runs on blocks of LRC_GUARD_BLOCK elements; a block holding a nonzero gradient below
 * tiny_below (2·√(smallest normal / (1 − β2)) / |grad factor|, the test read ahead within the
 * block before it) runs the careful form of adam_loop, which gives the same bits. Small blocks
 * (8 AVX-512 vectors) keep the careful form to the few elements around a tiny gradient: a
 * trained MLP's gradients had one in 32 % of 1024-element blocks, 14 % of 128-element ones,
 * and normal gradients run as fast on either (benchmarks/subnormal_step.py). */
#define LRC_GUARD_BLOCK 128

LRC_ALWAYS_INLINE void LRC_NAME(adam)(
    LRC_P *LRC_RESTRICT p, const LRC_G *LRC_RESTRICT g, LRC_B *LRC_RESTRICT m,
    LRC_B *LRC_RESTRICT v, LRC_B *LRC_RESTRICT vmax, lrc_index n, const lrc_hyper *h,
    double step_size, double inv_bc2_sqrt, const int guard)
{
    const LRC_REAL ss = (LRC_REAL)step_size, inv_bc2 = (LRC_REAL)inv_bc2_sqrt;
    const LRC_REAL gf = (LRC_REAL)h->grad_factor;
    const LRC_BITS flip = LRC_NAME(maximize_mask)(h);
    const LRC_REAL wd = (LRC_REAL)h->weight_decay;
    const LRC_REAL decay = (LRC_REAL)(1.0 - h->lr * h->weight_decay);
    const LRC_REAL b1c = (LRC_REAL)(1.0 - h->beta1), b1c_1 = (LRC_REAL)1 - b1c;
    const int low = b1c < (LRC_REAL)0.5;
    const LRC_REAL b2 = (LRC_REAL)h->beta2, b2c = (LRC_REAL)(1.0 - h->beta2);
    const LRC_REAL eps = (LRC_REAL)h->eps;
    const int wd_mode = h->weight_decay == 0.0 ? LRC_WD_NONE
                      : h->decoupled_weight_decay ? LRC_WD_DECOUPLED : LRC_WD_L2;
    const int guarded = LRC_GUARD_UNDERFLOW && guard;
    const double smallest = LRC_GUARD_UNDERFLOW ? FLT_MIN : DBL_MIN;
    const double b2c_wide = h->beta2 < 1.0 ? 1.0 - h->beta2 : 1.0;
    const LRC_REAL tiny_below = (LRC_REAL)(2.0 * sqrt(smallest / b2c_wide) / fabs(h->grad_factor));
    const double one = lrc_exact_one;
    /* the loop over elements [o, o + len), careful or not, reading ahead or not */
#define LRC_ADAM_CASE(mode, ams) tiny_ahead = LRC_NAME(adam_loop)(                         \
    p + o, g + o, m + o, v + o, amsgrad_buffer, len, ss, inv_bc2, gf, scaled, flip, wd,   \
    decay, b1c, b1c_1, low, b2, b2c, eps, mode, ams, careful, ahead, tiny_below, one)
#define LRC_ADAM_CASES(ams)                                                                \
    if (wd_mode == LRC_WD_NONE) LRC_ADAM_CASE(LRC_WD_NONE, ams);                           \
    else if (wd_mode == LRC_WD_L2) LRC_ADAM_CASE(LRC_WD_L2, ams);                          \
    else LRC_ADAM_CASE(LRC_WD_DECOUPLED, ams);
#define LRC_ADAM_RANGE(careful_, ahead_)                                                   \
    {                                                                                      \
        const int careful = careful_, ahead = ahead_;                                      \
        LRC_B *amsgrad_buffer = h->amsgrad ? vmax + o : vmax;                              \
        if (h->amsgrad) {                                                                  \
            LRC_SCALED(LRC_ADAM_CASES(1))                                                  \
        } else {                                                                           \
            LRC_SCALED(LRC_ADAM_CASES(0))                                                  \
        }                                                                                  \
    }
    int tiny_ahead = 0;
    if (!guarded) {
        const lrc_index o = 0, len = n;
        LRC_ADAM_RANGE(0, 0)
        return;
    }
    int tiny = LRC_NAME(any_tiny)(g, n < LRC_GUARD_BLOCK ? n : LRC_GUARD_BLOCK, tiny_below);
    for (lrc_index o = 0; o < n; o += LRC_GUARD_BLOCK) {
        const lrc_index len = n - o < LRC_GUARD_BLOCK ? n - o : LRC_GUARD_BLOCK;
        const lrc_index rest = n - o - len;         /* elements after this block */
        if (tiny) {
            LRC_ADAM_RANGE(1, 0)
        } else if (rest >= LRC_GUARD_BLOCK) {
            LRC_ADAM_RANGE(0, 1)
            tiny = tiny_ahead;
            continue;
        } else {
            LRC_ADAM_RANGE(0, 0)
        }
        tiny = LRC_NAME(any_tiny)(g + o + len, rest < LRC_GUARD_BLOCK ? rest : LRC_GUARD_BLOCK,
                                  tiny_below);
    }
#undef LRC_ADAM_RANGE
#undef LRC_ADAM_CASES
#undef LRC_ADAM_CASE
}

#undef LRC_GRAD
#undef LRC_SCALED
