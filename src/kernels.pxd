# Cython view of src/kernels.h: the hyperparameter struct, the per-array record and the
# element kernels, shared by every .pyx that drives them.
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "formats.h" nogil:
    ctypedef enum lrc_format:
        LRC_FLOAT32
        LRC_FLOAT64
        LRC_FLOAT16
        LRC_BFLOAT16
        LRC_CODES8

    const char *lrc_conversion_names[3]
    int lrc_conversion_in_use()
    int lrc_set_conversion_level(int level)

cdef extern from "kernels.h" nogil:
    ctypedef Py_ssize_t lrc_index

    ctypedef enum lrc_kind:
        LRC_SGD
        LRC_ADAGRAD
        LRC_RMSPROP
        LRC_ADAM

    ctypedef struct lrc_hyper:
        double lr
        double grad_factor
        double weight_decay
        double momentum
        double dampening
        double beta1
        double beta2
        double eps
        double alpha
        double lr_decay
        int nesterov
        int centered
        int amsgrad
        int decoupled_weight_decay
        int maximize

    ctypedef struct lrc_array:
        void *param
        const void *grad
        void *buf[3]
        float *absmax[3]
        lrc_index n
        lrc_index origin
        int64_t step
        lrc_format pfmt
        lrc_format gfmt
        lrc_format bfmt
        int stochastic
        uint64_t key[4]

    int lrc_required_buffers(lrc_kind kind, const lrc_hyper *h)
    int lrc_run(lrc_kind kind, const lrc_hyper *h, const lrc_array *arrays, lrc_index count,
                int threads)
    int lrc_all_finite(const lrc_array *arrays, lrc_index count, int threads)
    int lrc_grad_sumsq(const lrc_array *arrays, lrc_index count, int threads, double *sumsq)
    int lrc_combination_supported(lrc_format p, lrc_format g, lrc_format b)
    int lrc_state_supported(lrc_format p, lrc_format b)
    lrc_index LRC_CHUNK
    int LRC_LANES
    const char *lrc_isa_dispatched()
    const char *LRC_ISA_COMPILED
    const char *LRC_COMPILER

cdef extern from "fpcontrol.h" nogil:
    int lrc_set_flush_to_zero(int on)

cdef extern from "pool.h" nogil:
    const char *LRC_THREADING
    int LRC_MAX_THREADS
    int lrc_pool_workers()
    int lrc_pool_share_openmp(int share)
    int lrc_pool_openmp_shared()

cdef extern from "compact.h" nogil:
    enum: LRC_Q8_BLOCK
    const uint32_t lrc_q8_map_bits[2][256]
    int lrc_q8_init()
    float lrc_q8_quantize(const float *x, int is_unsigned, uint8_t *codes, ptrdiff_t n)
    void lrc_q8_quantize_blocks(const float *x, int is_unsigned, uint8_t *codes, float *absmax,
                                ptrdiff_t n)
    void lrc_q8_dequantize(const uint8_t *codes, float absmax, int is_unsigned, float *out,
                           ptrdiff_t n)
    void lrc_q8_dequantize_blocks(const uint8_t *codes, const float *absmax, int is_unsigned,
                                  float *out, ptrdiff_t n)
    uint64_t lrc_rounding_key(uint64_t seed, uint64_t step, uint64_t array, uint64_t slot)
    void lrc_round_bf16_stochastic(const float *x, uint16_t *out, ptrdiff_t n, uint64_t key,
                                   int64_t start)
