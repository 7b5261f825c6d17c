# Cython view of src/schedules.h.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "schedules.h" nogil:
    ctypedef enum lrc_schedule_kind:
        LRC_CONSTANT
        LRC_PIECEWISE_CONSTANT
        LRC_EXPONENTIAL_DECAY
        LRC_NATURAL_EXP_DECAY
        LRC_INVERSE_TIME_DECAY
        LRC_POLYNOMIAL_DECAY
        LRC_COSINE_DECAY
        LRC_COSINE_DECAY_RESTARTS
        LRC_LINEAR_COSINE_DECAY
        LRC_NOISY_LINEAR_COSINE_DECAY
        LRC_WARMUP
        LRC_LINEAR
        LRC_INVERSE_SQRT
        LRC_WARMUP_STABLE_DECAY
        LRC_ONE_CYCLE
        LRC_CYCLIC
        LRC_SEQUENCE

    ctypedef struct lrc_schedule:
        lrc_schedule_kind kind
        double initial
        double steps
        int64_t warmup_steps
        double rate
        double end
        double power
        double alpha
        double beta
        double num_periods
        double t_mul
        double m_mul
        double initial_variance
        double variance_decay
        int staircase
        int cycle
        int linear
        uint64_t seed
        const double *boundaries
        const double *values
        int64_t count
        const lrc_schedule *inner
        double peak
        double timescale
        int64_t stable_steps
        int decay_shape
        int has_target
        double lr_low
        double lr_high
        double lr_min
        double ends[3]
        int phases
        int anneal_cos
        double total_size
        double step_ratio
        double gamma
        int cyclic_mode
        const lrc_schedule *const *pieces
        const int64_t *starts

    double lrc_schedule_value(const lrc_schedule *s, int64_t step)
