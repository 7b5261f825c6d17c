/* Element loops for one element type; included by kernels.h with LRC_REAL and LRC_NAME set.
 * No include guard on purpose. */

/* p -= lr * d, where d is the SGD direction of torch.optim.SGD:
 *   d = ±g (+ wd·p);  b = d on the first step, else b = momentum·b + (1 − dampening)·d;
 *   d = d + momentum·b (nesterov) or b.
 * has_wd and mode are constants at every call site of this inline function, so each
 * combination compiles to its own branch-free, vectorizable loop. maximize is a sign
 * multiply: ±1·g is exact, so it needs no branch. */
static inline void LRC_NAME(sgd_loop)(
    LRC_REAL *LRC_RESTRICT p, const LRC_REAL *LRC_RESTRICT g, LRC_REAL *LRC_RESTRICT b,
    lrc_index n, LRC_REAL lr, LRC_REAL sign, LRC_REAL wd, LRC_REAL mom, LRC_REAL damp1,
    const int has_wd, const int mode)
{
    for (lrc_index i = 0; i < n; i++) {
        LRC_REAL d = sign * g[i];
        if (has_wd) d = d + wd * p[i];
        switch (mode) {
        case LRC_MOM_FIRST:          b[i] = d; break;
        case LRC_MOM_FIRST_NESTEROV: b[i] = d; d = d + mom * d; break;
        case LRC_MOM_HEAVY_BALL:     b[i] = mom * b[i] + damp1 * d; d = b[i]; break;
        case LRC_MOM_NESTEROV:       b[i] = mom * b[i] + damp1 * d; d = d + mom * b[i]; break;
        default: break;
        }
        p[i] = p[i] - lr * d;
    }
}

#define LRC_SGD_MODES(has_wd)                                                              \
    switch (mode) {                                                                        \
    case LRC_MOM_NONE:          LRC_NAME(sgd_loop)(p, g, b, n, lr, sign, wd, mom, damp1, has_wd, LRC_MOM_NONE); break;          \
    case LRC_MOM_FIRST:         LRC_NAME(sgd_loop)(p, g, b, n, lr, sign, wd, mom, damp1, has_wd, LRC_MOM_FIRST); break;         \
    case LRC_MOM_FIRST_NESTEROV: LRC_NAME(sgd_loop)(p, g, b, n, lr, sign, wd, mom, damp1, has_wd, LRC_MOM_FIRST_NESTEROV); break; \
    case LRC_MOM_HEAVY_BALL:    LRC_NAME(sgd_loop)(p, g, b, n, lr, sign, wd, mom, damp1, has_wd, LRC_MOM_HEAVY_BALL); break;    \
    default:                    LRC_NAME(sgd_loop)(p, g, b, n, lr, sign, wd, mom, damp1, has_wd, LRC_MOM_NESTEROV); break;      \
    }

static inline void LRC_NAME(sgd)(
    LRC_REAL *LRC_RESTRICT p, const LRC_REAL *LRC_RESTRICT g, LRC_REAL *LRC_RESTRICT b,
    lrc_index n, const lrc_hyper *h, int mode)
{
    const LRC_REAL lr = (LRC_REAL)h->lr;
    const LRC_REAL sign = h->maximize ? (LRC_REAL)-1 : (LRC_REAL)1;
    const LRC_REAL wd = (LRC_REAL)h->weight_decay;
    const LRC_REAL mom = (LRC_REAL)h->momentum;
    const LRC_REAL damp1 = (LRC_REAL)(1.0 - h->dampening);
    if (h->weight_decay != 0.0) {
        LRC_SGD_MODES(1)
    } else {
        LRC_SGD_MODES(0)
    }
}

#undef LRC_SGD_MODES
