/* The kernels without Python, for comparing builds: compilers, optimization levels, vector
 * levels and CPU architectures (tests/test_portability.py builds this file natively, and for
 * aarch64 when a cross compiler and qemu are at hand).
 *
 * Every optimizer, with options that take its every branch, runs 3 updates over 69635
 * elements (two 32K chunks, a vector tail and a partial 8-bit block) of each storage combination the
 * step takes plus the compact states, on 1 and 2 threads, from inputs a fixed LCG draws
 * (NaN, inf and subnormal grads among them). Each case prints one line: its name and an
 * FNV-1a hash of the params' and buffers' bytes afterwards, every NaN hashed as one pattern:
 * the kernels promise the same bits on every ISA, thread count and compiler but for the sign
 * and payload of a NaN where two NaNs meet in one operation (IEEE 754 leaves open which one
 * comes out), so every build must print the same lines.
 *
 *   portability [LEVEL]    LEVEL: a vector level index (formats.h); default: the best
 */
#include <stdio.h>
#include <stdlib.h>

#include "kernels.h"

#define N (2 * 32768 + 4099)     /* two chunks for the thread pool, and a tail */
#define STEPS 3

static uint64_t lcg_state = 0x9e3779b97f4a7c15u;

static uint32_t lcg(void)
{
    lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(lcg_state >> 33);
}

/* A value in [-2, 2), now and then (about 1 in 5000) a special one. */
static double draw(int with_specials)
{
    const uint32_t r = lcg();
    if (with_specials && r % 9973 == 0) return (r >> 10) % 2 ? NAN : -INFINITY;
    if (with_specials && r % 9967 == 0) return 1e-41;             /* subnormal in float32 */
    return ((double)(r & 0xffffff) / 0x1000000) * 4.0 - 2.0;
}

/* non_negative: values in [0.5, 2) (second moments), else [-0.5, 0.5) for buffers (so that
 * RMSprop's centered v - a² stays positive) or [-2, 2) for params and grads. */
static void fill(void *dst, lrc_format f, lrc_index n, int with_specials, int buffer,
                 int non_negative)
{
    for (lrc_index i = 0; i < n; i++) {
        double v = draw(with_specials);
        if (buffer) v = non_negative ? fabs(v) * 0.75 + 0.5 : v * 0.25;
        switch (f) {
        case LRC_FLOAT64: ((double *)dst)[i] = v; break;
        case LRC_FLOAT32: ((float *)dst)[i] = (float)v; break;
        case LRC_BFLOAT16: ((uint16_t *)dst)[i] = lrc_store_bf16((float)v); break;
        case LRC_FLOAT16: ((uint16_t *)dst)[i] = lrc_store_f16((float)v); break;
        case LRC_CODES8: break;         /* filled by quantizing float32 values */
        }
    }
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t bytes)
{
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < bytes; i++) h = (h ^ p[i]) * 0x100000001b3u;
    return h;
}

/* The hash of n values of format f, each NaN counted as 0xff bytes. */
static uint64_t hash_values(uint64_t h, const void *data, lrc_format f, lrc_index n)
{
    const size_t size = lrc_format_size(f);
    static const unsigned char nan[8] = {255, 255, 255, 255, 255, 255, 255, 255};
    for (lrc_index i = 0; i < n; i++) {
        const char *v = (const char *)data + i * size;
        int is_nan = 0;
        switch (f) {
        case LRC_FLOAT64: is_nan = isnan(((const double *)data)[i]); break;
        case LRC_FLOAT32: is_nan = isnan(((const float *)data)[i]); break;
        case LRC_FLOAT16: is_nan = isnan(lrc_load_f16(((const uint16_t *)data)[i])); break;
        case LRC_BFLOAT16: is_nan = isnan(lrc_load_bf16(((const uint16_t *)data)[i])); break;
        case LRC_CODES8: break;
        }
        h = fnv1a(h, is_nan ? (const void *)nan : (const void *)v, size);
    }
    return h;
}

typedef struct { const char *name; lrc_kind kind; lrc_hyper h; } opt_case;

static void run_case(const opt_case *c, lrc_format p, lrc_format g, lrc_format b,
                     int stochastic, int threads)
{
    lcg_state = 0x9e3779b97f4a7c15u;       /* every case from the same inputs */
    const int need = lrc_required_buffers(c->kind, &c->h);
    const int unsigned_slots = lrc_unsigned_slots(c->kind);
    const lrc_index blocks = (N + LRC_Q8_BLOCK - 1) / LRC_Q8_BLOCK;
    void *param = malloc(N * lrc_format_size(p));
    void *grad = malloc(N * lrc_format_size(g));
    void *buf[3] = {NULL, NULL, NULL};
    float *absmax[3] = {NULL, NULL, NULL};
    fill(param, p, N, 0, 0, 0);
    for (int j = 0; j < 3; j++) {
        if (!(need >> j & 1)) continue;
        buf[j] = malloc(N * lrc_format_size(b));
        if (b == LRC_CODES8) {
            float *values = (float *)malloc(N * sizeof(float));
            fill(values, LRC_FLOAT32, N, 0, 1, unsigned_slots >> j & 1);
            absmax[j] = (float *)malloc(blocks * sizeof(float));
            lrc_q8_quantize_blocks(values, unsigned_slots >> j & 1, (uint8_t *)buf[j], absmax[j], N);
            free(values);
        } else {
            fill(buf[j], b, N, 0, 1, unsigned_slots >> j & 1);
        }
    }
    for (int64_t step = 0; step < STEPS; step++) {
        fill(grad, g, N, 1, 0, 0);
        lrc_array a;
        memset(&a, 0, sizeof a);
        a.param = param; a.grad = grad; a.n = N; a.step = step;
        a.pfmt = p; a.gfmt = g; a.bfmt = b;
        for (int j = 0; j < 3; j++) { a.buf[j] = buf[j]; a.absmax[j] = absmax[j]; }
        a.stochastic = stochastic;
        for (int j = 0; j < 4; j++) a.key[j] = lrc_rounding_key(7, (uint64_t)step, 0, (uint64_t)j);
        if (lrc_run(c->kind, &c->h, &a, 1, threads) != 0) { puts("out of memory"); exit(2); }
    }
    uint64_t hash = hash_values(0xcbf29ce484222325u, param, p, N);
    for (int j = 0; j < 3; j++) {
        if (buf[j]) hash = hash_values(hash, buf[j], b, N);
        if (absmax[j]) hash = hash_values(hash, absmax[j], LRC_FLOAT32, blocks);
        free(buf[j]);
        free(absmax[j]);
    }
    lrc_index nans = 0;
    for (lrc_index i = 0; i < N; i++)
        nans += p == LRC_FLOAT64 ? isnan(((double *)param)[i])
              : p == LRC_FLOAT32 ? isnan(((float *)param)[i])
              : p == LRC_FLOAT16 ? isnan(lrc_load_f16(((uint16_t *)param)[i]))
              : isnan(lrc_load_bf16(((uint16_t *)param)[i]));
    printf("%-22s p%d g%d b%d r%d t%d %016llx %ld NaN params\n", c->name, (int)p, (int)g,
           (int)b, stochastic, threads, (unsigned long long)hash, (long)nans);
    free(param);
    free(grad);
}

int main(int argc, char **argv)
{
    if (lrc_q8_init() != 0) { puts("8-bit tables failed their check"); return 2; }
    if (argc > 1 && lrc_set_conversion_level(atoi(argv[1])) != 0) {
        puts("this CPU cannot run that level");
        return 3;
    }
    const lrc_hyper base = {.lr = 0.01, .grad_factor = 0.5, .weight_decay = 0.01,
                            .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .alpha = 0.99};
    opt_case cases[6];
    for (int i = 0; i < 6; i++) cases[i].h = base;
    cases[0].name = "sgd nesterov"; cases[0].kind = LRC_SGD;
    cases[0].h.momentum = 0.9; cases[0].h.nesterov = 1;
    cases[1].name = "sgd dampening maximize"; cases[1].kind = LRC_SGD;
    cases[1].h.momentum = 0.8; cases[1].h.dampening = 0.1; cases[1].h.maximize = 1;
    cases[2].name = "adagrad"; cases[2].kind = LRC_ADAGRAD; cases[2].h.lr_decay = 0.01;
    cases[3].name = "rmsprop centered mom"; cases[3].kind = LRC_RMSPROP;
    cases[3].h.centered = 1; cases[3].h.momentum = 0.9;
    cases[4].name = "adam amsgrad"; cases[4].kind = LRC_ADAM; cases[4].h.amsgrad = 1;
    cases[5].name = "adamw"; cases[5].kind = LRC_ADAM; cases[5].h.decoupled_weight_decay = 1;
    const lrc_format formats[4] = {LRC_FLOAT32, LRC_FLOAT64, LRC_FLOAT16, LRC_BFLOAT16};
    for (int c = 0; c < 6; c++)
        for (int threads = 1; threads <= 2; threads++) {
            for (int p = 0; p < 4; p++)
                for (int g = 0; g < 4; g++)
                    for (int b = 0; b < 5; b++) {
                        const lrc_format pf = formats[p], gf = formats[g];
                        const lrc_format bf = b < 4 ? formats[b] : LRC_CODES8;
                        if (!lrc_combination_supported(pf, gf, pf)) continue;
                        if (!lrc_state_supported(pf, bf)) continue;
                        run_case(&cases[c], pf, gf, bf, 0, threads);
                    }
            /* stochastic rounding: bfloat16 buffers, and bfloat16 params */
            run_case(&cases[c], LRC_FLOAT32, LRC_FLOAT32, LRC_BFLOAT16, 7, threads);
            run_case(&cases[c], LRC_BFLOAT16, LRC_BFLOAT16, LRC_BFLOAT16, 15, threads);
        }
    return 0;
}
