# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, binding=True
"""Compiled optimizer step: lrcore's fast path.

Modelled on numpy/random/_common.pyx: every buffer is checked with the GIL held (type,
dtype, byte order, C-contiguity, alignment, writeability, shape against the state's bound
signature, overlap), then one nogil region runs the element kernels of src/kernels.h over all
arrays of the call. The checks here are boolean and cheap; when one fails, the Python
validator (lrcore/_validate.py) is asked to raise, so both backends give the same messages.
"""
from libc.stdint cimport int64_t, uint64_t, INT64_MAX
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, NOWAIT_LOCK,
                               WAIT_LOCK)
from libc.math cimport isfinite, sqrt, INFINITY
from libc.stdlib cimport malloc, free
from cpython.ref cimport Py_INCREF
import numpy as np
cimport numpy as cnp

from kernels cimport (lrc_hyper, lrc_array, lrc_kind, lrc_format, LRC_FLOAT32, LRC_FLOAT64,
                      LRC_FLOAT16, LRC_BFLOAT16, LRC_CODES8, LRC_SGD, LRC_ADAGRAD, LRC_RMSPROP, LRC_ADAM,
                      lrc_required_buffers, lrc_run, lrc_all_finite, lrc_grad_sumsq,
                      lrc_combination_supported, LRC_CHUNK, LRC_LANES, lrc_isa_dispatched,
                      LRC_ISA_COMPILED, LRC_COMPILER, LRC_THREADING, LRC_MAX_THREADS,
                      lrc_pool_workers, lrc_pool_share_openmp, lrc_pool_openmp_shared,
                      lrc_conversion_names, lrc_conversion_in_use,
                      lrc_set_conversion_level, lrc_state_supported, LRC_Q8_BLOCK,
                      lrc_rounding_key, lrc_set_flush_to_zero)
from lrcore._validate import BFLOAT16_BITS, BUFFER_FORMATS, BUFFER_SLOTS, FORMATS
from schedules cimport lrc_schedule, lrc_schedule_kind, lrc_schedule_value

cdef extern from "overlap.h" nogil:
    ctypedef struct lrc_span "lrc_span":
        size_t start
        size_t end
        int written
    bint lrc_spans_disjoint(lrc_span *spans, Py_ssize_t n)

ctypedef lrc_span Span

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    bint PyArray_ISNOTSWAPPED(cnp.ndarray)
    int NPY_USERDEF
    # (numpy's own .pxd leaves it out; subtype and descr are pointers the C call converts,
    # descr's reference is stolen)
    object PyArray_NewFromDescr(void *subtype, void *descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, object obj)

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident()

MAX_THREADS = LRC_MAX_THREADS
# The norm's summation order (lrcore/reference.py's grad_sumsq follows it).
CHUNK, LANES = LRC_CHUNK, LRC_LANES


def combinations():
    """The (params, grads, buffers) format combinations the kernels have loops for, by
    format name (src/kernels.h's LRC_COMBOS; lrcore._validate.COMBINATIONS must equal it)."""
    n = len(FORMATS)
    return [(FORMATS[p], FORMATS[g], FORMATS[b]) for p in range(n) for g in range(n)
            for b in range(n)
            if lrc_combination_supported(<lrc_format>p, <lrc_format>g, <lrc_format>b)]

# Optimizer kinds (lrc_kind); lrcore/optimizers.py passes these to step(). AdamW is ADAM
# with decoupled_weight_decay set.
SGD, ADAGRAD, RMSPROP, ADAM = LRC_SGD, LRC_ADAGRAD, LRC_RMSPROP, LRC_ADAM

# Per kind, the state buffer names that fill lrc_array.buf[0], buf[1], buf[2] (torch's names)
# are lrcore._validate.BUFFER_SLOTS, keyed by these kinds.

# Order of the hyperparameter tuple step() unpacks into lrc_hyper (all but lr).
HYPER_FIELDS = ("weight_decay", "momentum", "dampening", "beta1", "beta2", "eps", "alpha",
                "lr_decay", "nesterov", "centered", "amsgrad", "decoupled_weight_decay",
                "maximize")

cdef enum:
    STACK_ARRAYS = 32   # arrays of a call up to this count live on the stack; more are malloc'd

# Schedule kinds, in the order of lrc_schedule_kind.
SCHEDULE_KINDS = ("Constant", "PiecewiseConstant", "ExponentialDecay", "NaturalExpDecay",
                  "InverseTimeDecay", "PolynomialDecay", "CosineDecay", "CosineDecayRestarts",
                  "LinearCosineDecay", "NoisyLinearCosineDecay", "Warmup",
                  "Linear", "InverseSqrt", "WarmupStableDecay", "OneCycle", "Cyclic", "Sequence")


cdef class CompiledSchedule:
    """A learning-rate schedule as src/schedules.h evaluates it: built once by
    lrcore.schedules (keywords are lrc_schedule's fields), then read by step() in C at
    every update."""
    cdef lrc_schedule s
    cdef object _keep          # the arrays and the inner schedule that s points into

    def __init__(self, str kind, *, double initial=0, double steps=0, int64_t warmup_steps=0,
                 double rate=0,
                 double end=0, double power=0, double alpha=0, double beta=0,
                 double num_periods=0, double t_mul=0, double m_mul=0,
                 double initial_variance=0, double variance_decay=0, bint staircase=False,
                 bint cycle=False, bint linear=False, unsigned long long seed=0,
                 boundaries=None, values=None, CompiledSchedule inner=None,
                 double peak=0, double timescale=0, int64_t stable_steps=0, int decay_shape=0,
                 bint has_target=False, double lr_low=0, double lr_high=0, double lr_min=0,
                 tuple ends=(), bint anneal_cos=False, double total_size=0,
                 double step_ratio=0, double gamma=0, int cyclic_mode=0, list pieces=None,
                 starts=None):
        cdef cnp.ndarray b, v
        self.s.kind = <lrc_schedule_kind><int>SCHEDULE_KINDS.index(kind)
        self.s.initial, self.s.steps, self.s.rate, self.s.end = initial, steps, rate, end
        self.s.warmup_steps = warmup_steps
        self.s.power, self.s.alpha, self.s.beta = power, alpha, beta
        self.s.num_periods, self.s.t_mul, self.s.m_mul = num_periods, t_mul, m_mul
        self.s.initial_variance, self.s.variance_decay = initial_variance, variance_decay
        self.s.staircase, self.s.cycle, self.s.linear, self.s.seed = staircase, cycle, linear, seed
        self.s.boundaries = self.s.values = NULL
        self.s.count = 0
        self.s.inner = NULL
        self.s.peak, self.s.timescale, self.s.stable_steps = peak, timescale, stable_steps
        self.s.decay_shape, self.s.has_target = decay_shape, has_target
        self._keep = []
        if kind == "PiecewiseConstant":
            b = np.ascontiguousarray(boundaries, dtype=np.float64)
            v = np.ascontiguousarray(values, dtype=np.float64)
            if b.ndim != 1 or v.ndim != 1 or v.shape[0] != b.shape[0] + 1:
                raise ValueError("values must hold one more entry than boundaries")
            self.s.boundaries = <const double *>cnp.PyArray_DATA(b)
            self.s.values = <const double *>cnp.PyArray_DATA(v)
            self.s.count = b.shape[0]
            self._keep = [b, v]
        elif kind == "Warmup":
            if inner is None:
                raise TypeError("Warmup needs the inner schedule")
            self.s.inner = &inner.s
            self._keep = [inner]
        self._init_cyclic(kind, lr_low, lr_high, lr_min, ends, anneal_cos, total_size,
                          step_ratio, gamma, cyclic_mode, pieces, starts)

    cdef _init_cyclic(self, str kind, double lr_low, double lr_high, double lr_min, tuple ends,
                      bint anneal_cos, double total_size, double step_ratio, double gamma,
                      int cyclic_mode, list pieces, starts):
        """OneCycle's, Cyclic's and Sequence's fields; a Sequence keeps its pieces and the
        array of their struct pointers alive."""
        cdef cnp.ndarray starts_array, pointers
        cdef size_t *address
        cdef Py_ssize_t i
        self.s.lr_low, self.s.lr_high, self.s.lr_min = lr_low, lr_high, lr_min
        self.s.ends[0] = self.s.ends[1] = self.s.ends[2] = 0.0
        self.s.phases = 0
        self.s.anneal_cos = anneal_cos
        self.s.total_size, self.s.step_ratio, self.s.gamma = total_size, step_ratio, gamma
        self.s.cyclic_mode = cyclic_mode
        self.s.pieces = NULL
        self.s.starts = NULL
        if kind == "OneCycle":
            if not 2 <= len(ends) <= 3:
                raise ValueError("OneCycle needs 2 or 3 phase end steps")
            for i in range(len(ends)):
                self.s.ends[i] = ends[i]
            self.s.phases = len(ends)
        elif kind == "Sequence":
            if pieces is None or starts is None:
                raise TypeError("Sequence needs its pieces and boundaries")
            starts_array = np.ascontiguousarray(starts, dtype=np.int64)
            if starts_array.ndim != 1 or len(pieces) != starts_array.shape[0] + 1:
                raise ValueError("pieces must hold one more entry than boundaries")
            if starts_array.shape[0] and (starts_array[0] < 0 or np.any(np.diff(starts_array) < 0)):
                raise ValueError("boundaries must be steps >= 0 in non-decreasing order")
            pointers = np.empty(len(pieces), dtype=np.uintp)
            address = <size_t *>cnp.PyArray_DATA(pointers)
            for i in range(len(pieces)):
                address[i] = <size_t>&(<CompiledSchedule?>pieces[i]).s
            self.s.pieces = <const lrc_schedule *const *>cnp.PyArray_DATA(pointers)
            self.s.starts = <const int64_t *>cnp.PyArray_DATA(starts_array)
            self.s.count = starts_array.shape[0]
            self._keep = [list(pieces), starts_array, pointers]

    def value(self, int64_t step):
        """The schedule at one step."""
        return lrc_schedule_value(&self.s, step)

    def values(self, cnp.ndarray steps not None):
        """The schedule at each step of a C-contiguous int64 array (>= 0), as float64."""
        if cnp.PyArray_TYPE(steps) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(steps):
            raise TypeError("steps must be a C-contiguous int64 array")
        cdef cnp.ndarray out = np.empty_like(steps, dtype=np.float64)
        cdef const int64_t *s = <const int64_t *>cnp.PyArray_DATA(steps)
        cdef double *o = <double *>cnp.PyArray_DATA(out)
        cdef Py_ssize_t i, n = cnp.PyArray_SIZE(steps)
        with nogil:
            for i in range(n):
                o[i] = lrc_schedule_value(&self.s, s[i])
        return out


cdef int _bfloat16_typenum = -1     # ml_dtypes' bfloat16 type number, once seen


cdef int _format_of(cnp.ndarray a) except -2:
    """a's storage format (lrc_format), or -1 for a dtype the kernels do not store. The
    builtin float types and a bfloat16 seen before are recognized by type number; anything
    else is asked of lrcore._validate.format_of once (and a bfloat16 remembered)."""
    global _bfloat16_typenum
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum == cnp.NPY_FLOAT32:
        return LRC_FLOAT32
    if typenum == cnp.NPY_FLOAT64:
        return LRC_FLOAT64
    if typenum == cnp.NPY_FLOAT16:
        return LRC_FLOAT16
    if typenum == cnp.NPY_UINT8 and (<object>cnp.PyArray_DESCR(a)).metadata is None:
        return LRC_CODES8          # 8-bit state codes (never a param or grad format)
    if typenum == _bfloat16_typenum or <object>cnp.PyArray_DESCR(a) is BFLOAT16_BITS:
        return LRC_BFLOAT16
    from lrcore._validate import format_of
    fmt = format_of(a.dtype)
    if fmt is None:
        return -1
    if fmt == "bfloat16" and typenum >= NPY_USERDEF:
        _bfloat16_typenum = typenum
    return FORMATS.index(fmt)


cdef inline int _stored_array(object obj, int flags) except -2:
    """The storage format of obj if it is an ndarray the kernels can run on (a stored
    format, native byte order, all of `flags` set, not of a subclass whose arithmetic differs
    from ndarray's: lrcore._validate.refused_subclass), else -1."""
    if not cnp.PyArray_Check(obj):
        return -1
    if type(obj) is not cnp.ndarray:
        from lrcore._validate import refused_subclass
        if refused_subclass(obj):
            return -1
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if not PyArray_ISNOTSWAPPED(a) or (cnp.PyArray_FLAGS(a) & flags) != flags:
        return -1
    return _format_of(a)


cdef inline void _add_span(Span *spans, Py_ssize_t *count, cnp.ndarray a, int written) noexcept:
    cdef size_t nbytes = <size_t>cnp.PyArray_NBYTES(a)
    if nbytes:
        spans[count[0]].start = <size_t>cnp.PyArray_DATA(a)
        spans[count[0]].end = spans[count[0]].start + nbytes
        spans[count[0]].written = written
        count[0] += 1


cdef bint _check_and_fill(list params, list grads, list slots, list absmax_slots,
                          cnp.ndarray buffer_formats, cnp.ndarray signature,
                          cnp.ndarray array_steps, lrc_array *arrays, Span *spans) except -1:
    """Check every array of the call and fill `arrays`; False on the first failed check.
    slots: per buffer slot, the state's list of arrays or None; absmax_slots likewise, the
    lists of float32 absmax arrays of 8-bit buffers; buffer_formats: per array, the format
    its buffers were bound with (lrc_format)."""
    cdef Py_ssize_t n = len(params), i, j, d, nspans = 0, pos = 0
    cdef Py_ssize_t siglen = cnp.PyArray_SIZE(signature)
    cdef const int64_t *sig = <const int64_t *>cnp.PyArray_DATA(signature)
    cdef const int64_t *steps = <const int64_t *>cnp.PyArray_DATA(array_steps)
    cdef int fmt, gfmt, bfmt, ndim
    cdef const int64_t *bfmts = <const int64_t *>cnp.PyArray_DATA(buffer_formats)
    cdef int rw = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED | cnp.NPY_ARRAY_WRITEABLE
    cdef int ro = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    cdef cnp.ndarray p, g, b, m
    cdef cnp.npy_intp *dims
    if len(grads) != n or cnp.PyArray_SIZE(array_steps) != n or cnp.PyArray_SIZE(buffer_formats) != n:
        return False
    for i in range(n):
        # signature record of array i: format, ndim, dims...
        if pos + 2 > siglen:
            return False
        fmt = <int>sig[pos]
        ndim = <int>sig[pos + 1]
        if pos + 2 + ndim > siglen:
            return False
        if _stored_array(params[i], rw) != fmt:
            return False
        p = <cnp.ndarray>params[i]
        if cnp.PyArray_NDIM(p) != ndim:
            return False
        dims = cnp.PyArray_DIMS(p)
        for d in range(ndim):
            if dims[d] != sig[pos + 2 + d]:
                return False
        pos += 2 + ndim
        arrays[i].param = cnp.PyArray_DATA(p)
        arrays[i].step = steps[i]
        arrays[i].origin = 0
        arrays[i].stochastic = 0
        bfmt = <int>bfmts[i]
        if not lrc_state_supported(<lrc_format>fmt, <lrc_format>bfmt):
            return False
        arrays[i].pfmt = arrays[i].gfmt = <lrc_format>fmt
        arrays[i].bfmt = <lrc_format>bfmt
        _add_span(spans, &nspans, p, 1)
        if grads[i] is None:            # a frozen parameter: this call leaves it alone
            arrays[i].grad = NULL
            arrays[i].n = 0
        else:
            gfmt = _stored_array(grads[i], ro)
            # grads as the dtype table (docs/reference.md) (whose rows have buffers in the params' format)
            if gfmt < 0 or not lrc_combination_supported(<lrc_format>fmt, <lrc_format>gfmt,
                                                          <lrc_format>fmt):
                return False
            arrays[i].gfmt = <lrc_format>gfmt
            g = <cnp.ndarray>grads[i]
            if cnp.PyArray_NDIM(g) != ndim:
                return False
            for d in range(ndim):
                if cnp.PyArray_DIMS(g)[d] != dims[d]:
                    return False
            arrays[i].grad = cnp.PyArray_DATA(g)
            arrays[i].n = cnp.PyArray_SIZE(p)
            _add_span(spans, &nspans, g, 0)
        for j in range(3):
            arrays[i].buf[j] = NULL
            arrays[i].absmax[j] = NULL
        for j in range(len(slots)):
            if slots[j] is None:
                continue
            # the buffers are the state's own; checked anyway, since they are written
            if len(<list>slots[j]) != n or _stored_array((<list>slots[j])[i], rw) != bfmt:
                return False
            b = <cnp.ndarray>(<list>slots[j])[i]
            if cnp.PyArray_SIZE(b) != cnp.PyArray_SIZE(p):
                return False
            arrays[i].buf[j] = cnp.PyArray_DATA(b)
            _add_span(spans, &nspans, b, 1)
            if bfmt == LRC_CODES8:      # and its float32 absmax, one per block
                if absmax_slots[j] is None or len(<list>absmax_slots[j]) != n or _stored_array(
                        (<list>absmax_slots[j])[i], rw) != LRC_FLOAT32:
                    return False
                m = <cnp.ndarray>(<list>absmax_slots[j])[i]
                if cnp.PyArray_SIZE(m) != (cnp.PyArray_SIZE(p) + LRC_Q8_BLOCK - 1) // LRC_Q8_BLOCK:
                    return False
                arrays[i].absmax[j] = <float *>cnp.PyArray_DATA(m)
                _add_span(spans, &nspans, m, 1)
    return pos == siglen and lrc_spans_disjoint(spans, nspans)


# StepCore.nonfinite: what a step does when a gradient holds NaN or ±inf (the codes of
# lrcore.optimizers.NONFINITE).
cdef enum:
    NONFINITE_PROPAGATE = 0
    NONFINITE_SKIP = 1
    NONFINITE_RAISE = 2

# Module state, set through lrcore.set_num_threads / lrcore.set_backend.
cdef int _num_threads = 1
cdef bint _active = True      # is the compiled backend the active one?
_python_step = None           # lrcore.optimizers.python_step, imported on first use


def set_num_threads(int n):
    """Threads the kernels may use for a large call (1: the calling thread only); lrcore's
    set_num_threads validates n first."""
    global _num_threads
    if not 1 <= n <= LRC_MAX_THREADS:
        raise ValueError(f"n must be an int from 1 to {LRC_MAX_THREADS}, got {n}")
    _num_threads = n


def set_active(bint active):
    """Whether lrcore.step runs the kernels (lrcore.set_backend sets this)."""
    global _active
    _active = active


def build_info():
    """What this extension was compiled with and what it dispatches to on this CPU."""
    return {"compiler": LRC_COMPILER.decode(), "isa_compiled": LRC_ISA_COMPILED.decode().split(","),
            "isa_dispatched": lrc_isa_dispatched().decode(),
            "threading": LRC_THREADING.decode(),
            "vector_level": lrc_conversion_names[lrc_conversion_in_use()].decode()}


# the vector levels of src/formats.h (lrc_conversion_names), lowest first
VECTOR_LEVELS = tuple(lrc_conversion_names[i].decode() for i in range(3))


def set_vector_level(name):
    """Use the vector level `name` (VECTOR_LEVELS) for everything that has one version per
    level (src/kernels.h, formats.h, compact.h): the update and gradient loops, the
    half-precision block conversions and the 8-bit primitives; or the best this CPU runs
    (None). For tests, which check that every version gives the same bits on one machine.
    ValueError when this CPU or build cannot run `name`."""
    if name is not None and name not in VECTOR_LEVELS:
        raise ValueError(f"name must be one of {VECTOR_LEVELS} or None, got {name!r}")
    level = -1 if name is None else VECTOR_LEVELS.index(name)
    if lrc_set_conversion_level(level) != 0:
        raise ValueError(f"this CPU or build cannot run the {name!r} half conversions")


def _set_flush_to_zero(bint on):
    """Set (or clear) flush-to-zero and denormals-are-zero in the calling thread, as
    torch.set_flush_denormal does, for the tests that check the pool's workers follow the
    caller; False where the CPU's control has no such bits."""
    return bool(lrc_set_flush_to_zero(on))


def pool_workers():
    """Worker threads the pool has started in this process (0 before any parallel call, and
    in a forked child until it makes one)."""
    return lrc_pool_workers()


def share_openmp_runtime(bint share):
    """Run parallel calls as the chunks of an OpenMP parallel region of the runtime loaded in
    this process, if it exports GOMP_parallel (lrcore.torch asks for it when torch runs on
    OpenMP: src/pool.h says why), or on lrcore's own workers (share False). Returns whether
    parallel calls now run on the OpenMP runtime. A forked child goes back to lrcore's own."""
    return bool(lrc_pool_share_openmp(share))


def openmp_shared():
    """Whether parallel calls run on the process's OpenMP runtime (share_openmp_runtime)."""
    return bool(lrc_pool_openmp_shared())


def _array_at(Py_ssize_t address, cnp.ndarray like, object owner):
    """A 1-D writeable array of like's dtype and size over the memory at `address`, which
    keeps `owner` alive: lrcore.torch's view of a grad it has checked to be laid out as its
    param (like: the param's flat view), at a fifth of the cost of Tensor.numpy(). The
    caller guarantees that owner holds like.size elements of that dtype from address on."""
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(like)
    cdef cnp.dtype descr = like.dtype
    Py_INCREF(descr)            # PyArray_NewFromDescr steals the reference
    cdef cnp.ndarray out = PyArray_NewFromDescr(
        <void *>np.ndarray, <void *>descr, 1, &size, NULL, <void *>address,
        cnp.NPY_ARRAY_CARRAY, None)     # (numpy sets ALIGNED from the address)
    cnp.set_array_base(out, owner)
    return out


cdef class StepCore:
    """What the compiled step reads and writes of an optimizer state: the kernel kind and
    hyperparameters, the lr source, the counts, the bound signature and the buffers.

    lr is a float (a constant rate), a CompiledSchedule (evaluated here in C), or None (a
    Python callable the state evaluates: the slow path). A schedule's or callable's value v
    is used as max(v·lr_scale, lr_floor) (lrcore.ReduceLROnPlateau sets both; 1 and -inf
    leave v as it is); a constant rate is used as it is. signature (int64: format, ndim,
    dims... per array) is None until bind(), which the state's first step calls.
    max_grad_norm is 0 when the state does not clip; last_grad_norm is None until a step
    computed a norm.
    """
    cdef readonly int kind
    cdef lrc_hyper h
    cdef public object lr
    cdef public double lr_scale           # a schedule's value is multiplied by it,
    cdef public double lr_floor           # then floored at this (lrcore/plateau.py)
    cdef public int64_t step_count
    cdef public int64_t skipped_steps
    cdef readonly double max_grad_norm    # 0: no clipping
    cdef double last_norm                 # valid when has_norm
    cdef bint has_norm
    cdef readonly int nonfinite           # NONFINITE_PROPAGATE, _SKIP or _RAISE
    cdef PyThread_type_lock lock          # serializes steps on this state
    cdef unsigned long owner              # ident of the thread holding lock, 0 when free
    cdef readonly cnp.ndarray array_steps      # updated in place, never replaced but by bind()
    cdef readonly object signature
    cdef readonly dict buffers
    cdef readonly object layout   # {name: [(stored format, shape) per array]}, or None
    cdef list slots               # per lrc_array.buf slot: the list of arrays, or None
    cdef list absmax_slots        # per slot: the absmax arrays of 8-bit buffers, or None
    cdef cnp.ndarray buffer_formats     # int64 per array: the lrc_format of its buffers
    cdef readonly uint64_t seed   # of the stochastic rounding keys
    cdef readonly int rounding    # lrc_array.stochastic: bit j slot j, bit 3 the params

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    def __init__(self, int kind, tuple hyper, int nonfinite=NONFINITE_PROPAGATE,
                 double max_grad_norm=0.0, uint64_t seed=0, int rounding=0):
        if kind not in BUFFER_SLOTS:
            raise ValueError(f"kind must be one of the kernels' optimizer kinds, got {kind}")
        if not (max_grad_norm >= 0 and isfinite(max_grad_norm)):
            raise ValueError(f"max_grad_norm must be a finite number >= 0, got {max_grad_norm}")
        self.kind = kind
        self.seed, self.rounding = seed, rounding
        self.nonfinite = nonfinite
        self.max_grad_norm = max_grad_norm
        self.has_norm = False
        self.skipped_steps = 0
        self.h.lr = 0.0
        (self.h.weight_decay, self.h.momentum, self.h.dampening, self.h.beta1, self.h.beta2,
         self.h.eps, self.h.alpha, self.h.lr_decay, self.h.nesterov, self.h.centered,
         self.h.amsgrad, self.h.decoupled_weight_decay, self.h.maximize) = hyper
        self.lr = None
        self.lr_scale, self.lr_floor = 1.0, -INFINITY
        self.step_count = 0
        self.unbind()

    def bind(self, cnp.ndarray signature not None, cnp.ndarray array_steps not None,
             dict buffers, dict layout):
        """Bind to arrays: their signature, per-array update counts, the buffers and their
        layout ({name: [(stored format name, shape) per array]}, Optimizer.layout)."""
        if (cnp.PyArray_TYPE(array_steps) != cnp.NPY_INT64 or cnp.PyArray_TYPE(signature) != cnp.NPY_INT64
                or not cnp.PyArray_IS_C_CONTIGUOUS(array_steps)
                or not cnp.PyArray_IS_C_CONTIGUOUS(signature)
                or not cnp.PyArray_ISWRITEABLE(array_steps)):
            raise TypeError("array_steps and signature must be C-contiguous int64 arrays")
        slots = [buffers.get(name) for name in BUFFER_SLOTS[self.kind]]
        required = lrc_required_buffers(<lrc_kind>self.kind, &self.h)
        for i in range(3):
            if required & (1 << i) and slots[i] is None:    # the kernel would write through NULL
                raise ValueError(f"buffers must hold {BUFFER_SLOTS[self.kind][i]!r} for these options")
        formats = np.empty(cnp.PyArray_SIZE(array_steps), dtype=np.int64)
        for i, (fmt, _) in enumerate(layout.get(BUFFER_SLOTS[self.kind][0]) or ()):
            formats[i] = BUFFER_FORMATS.index(fmt)
        if not layout:      # no buffers: none to check; the params' format stands in
            from lrcore._validate import describe
            for i, (fmt, _) in enumerate(describe(signature)):
                formats[i] = FORMATS.index(fmt)
        self.signature, self.array_steps, self.buffers, self.slots = signature, array_steps, buffers, slots
        self.absmax_slots = [buffers.get(name + "_absmax") for name in BUFFER_SLOTS[self.kind]]
        self.layout, self.buffer_formats = layout, formats

    @property
    def last_grad_norm(self):
        """The gradient norm (before clipping) of the last step that computed one, else None."""
        return self.last_norm if self.has_norm else None

    @last_grad_norm.setter
    def last_grad_norm(self, value):        # the numpy backend's step sets it
        self.has_norm = value is not None
        self.last_norm = 0.0 if value is None else value

    def acquire(self):
        """Take this state's lock, waiting without holding the GIL. RuntimeError if this thread
        holds it already (an lr callable stepping or snapshotting its own state), which would
        otherwise wait forever."""
        cdef unsigned long me = PyThread_get_thread_ident()
        if self.owner == me:        # only this thread can have stored its own ident
            from lrcore._validate import REENTRANT_USE
            raise RuntimeError(REENTRANT_USE)
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
        self.owner = me

    def release(self):
        self.owner = 0
        PyThread_release_lock(self.lock)

    def locked(self, fn, *args):
        """fn(*args) holding this state's lock. Here in C no signal handler can run between
        taking the lock and entering the try that releases it, as one could after a Python
        call to acquire() (a KeyboardInterrupt there left the lock held for ever)."""
        self.acquire()
        try:
            return fn(*args)
        finally:
            self.release()

    def unbind(self):
        self.signature = self.layout = None
        self.array_steps = np.zeros(0, dtype=np.int64)
        self.buffer_formats = np.zeros(0, dtype=np.int64)
        self.buffers = {}
        self.slots = []
        self.absmax_slots = []

    cdef double rate(self, object state) except? -1.0:
        """The rate of update number step_count (a schedule's scaled and floored)."""
        cdef double rate
        if type(self.lr) is float:
            return <double>self.lr
        if type(self.lr) is CompiledSchedule:
            rate = lrc_schedule_value(&(<CompiledSchedule>self.lr).s, self.step_count)
            if not isfinite(rate):
                raise ValueError(f"lr schedule gave {rate} at step {self.step_count}; "
                                 f"expected a finite number")
            # as Optimizer._scaled: one multiply, then the floor (the same double in Python)
            rate = rate * self.lr_scale
            return self.lr_floor if rate < self.lr_floor else rate
        return state._lr_at(self.step_count)

    cdef int _check(self, list params, list grads, lrc_array *arrays, Span *spans) except -1:
        """Fill `arrays` (and `spans`) for a call on params / grads of the bound state, or
        raise what lrcore._validate.check_step and check_counts raise; writes nothing else."""
        cdef Py_ssize_t i
        cdef const int64_t *steps
        cdef bint at_limit
        if self.signature is None:
            raise ValueError("the state is not bound to arrays yet")
        if not _check_and_fill(params, grads, self.slots, self.absmax_slots,
                               self.buffer_formats, self.signature, self.array_steps,
                               arrays, spans):
            from lrcore._validate import check_step
            check_step(params, grads, self.signature, self.buffers, self.layout)
            raise AssertionError(
                "lrcore internal error: the compiled checks rejected arrays that "
                "lrcore._validate.check_step accepts")
        steps = <const int64_t *>cnp.PyArray_DATA(self.array_steps)
        at_limit = self.step_count == INT64_MAX or (
            self.nonfinite == NONFINITE_SKIP and self.skipped_steps == INT64_MAX)
        for i in range(len(params)):
            at_limit = at_limit or (arrays[i].grad != NULL and steps[i] == INT64_MAX)
        if at_limit:
            from lrcore._validate import check_counts
            check_counts(self.step_count, self.skipped_steps, self.array_steps.tolist(),
                         grads, self.nonfinite == NONFINITE_SKIP)
            raise AssertionError("lrcore internal error: check_counts accepted a count at "
                                 "its limit")
        return 0

    def check(self, list params, list grads):
        """Raise what run(params, grads, ...) would raise before writing anything (the checks
        of lrcore._validate.check_step and check_counts); write nothing. A caller updating
        several states all or nothing checks each before running any."""
        cdef Py_ssize_t n = len(params)
        cdef lrc_array *arrays = <lrc_array *>malloc((n + 1) * sizeof(lrc_array))
        cdef Span *spans = <Span *>malloc((n + 1) * 8 * sizeof(Span))
        try:
            if arrays == NULL or spans == NULL:
                raise MemoryError()
            self._check(params, grads, arrays, spans)
        finally:
            free(arrays)
            free(spans)

    def run(self, list params, list grads, double rate, double grad_scale=1.0,
            object clip_coef=None):
        """Update every array of `params` in place at `rate`, in one nogil region, and count
        it: step_count and each updated array's count advance (a None gradient leaves its
        array and count alone). Every gradient is used as g·factor, factor =
        (1 / grad_scale)·coef in float64: coef is clip_coef when given, else the clipping
        coefficient of this call's gradient norm when the state clips (max_grad_norm), else 1.
        Returns False, having written nothing but skipped_steps + 1 (and last_grad_norm),
        when a gradient is not finite under nonfinite="skip" (FloatingPointError under
        "raise"). Raises what lrcore._validate.check_step and check_counts raise, before
        anything is written. The counts are committed in the same C call as the update, so no
        Python code (and no KeyboardInterrupt) can come between them."""
        cdef Py_ssize_t n = len(params), i, j
        cdef lrc_hyper h = self.h
        cdef lrc_array stack_arrays[STACK_ARRAYS]
        cdef Span stack_spans[STACK_ARRAYS * 8]
        cdef lrc_array *arrays = stack_arrays
        cdef Span *spans = stack_spans
        cdef int64_t *steps
        cdef int failed, finite = 1
        cdef bint clips = clip_coef is None and self.max_grad_norm > 0
        cdef double sumsq = 0.0, norm = 0.0
        cdef double coef = 1.0 if clip_coef is None else <double>clip_coef
        if not (grad_scale > 0 and isfinite(grad_scale)):
            raise ValueError(f"grad_scale must be a finite number > 0, got {grad_scale}")
        h.lr = rate
        if n > STACK_ARRAYS:
            arrays = <lrc_array *>malloc(n * sizeof(lrc_array))
            spans = <Span *>malloc(n * 8 * sizeof(Span))
            if arrays == NULL or spans == NULL:
                free(arrays)
                free(spans)
                raise MemoryError()
        try:
            self._check(params, grads, arrays, spans)
            steps = <int64_t *>cnp.PyArray_DATA(self.array_steps)
            if self.rounding:       # the keys of update step_count
                for i in range(n):
                    arrays[i].stochastic = self.rounding
                    for j in range(4):
                        arrays[i].key[j] = lrc_rounding_key(self.seed, <uint64_t>self.step_count,
                                                            <uint64_t>i, <uint64_t>j)
            with nogil:
                # one read of the grads for the norm and the finiteness check together
                if clips:
                    finite = lrc_grad_sumsq(arrays, n, _num_threads, &sumsq)
                    norm = sqrt(sumsq) / grad_scale
                    coef = clip_coefficient(norm, self.max_grad_norm)
                elif self.nonfinite != NONFINITE_PROPAGATE:
                    finite = lrc_all_finite(arrays, n, _num_threads)
                failed = finite < 0
                if self.nonfinite == NONFINITE_PROPAGATE and finite == 0:
                    finite = 1
                h.grad_factor = (1.0 / grad_scale) * coef
                if finite == 1:
                    failed = lrc_run(<lrc_kind>self.kind, &h, arrays, n, _num_threads)
                    if not failed:
                        for i in range(n):
                            if arrays[i].grad != NULL:
                                steps[i] += 1
                        self.step_count += 1
                elif finite == 0 and self.nonfinite == NONFINITE_SKIP:
                    self.skipped_steps += 1
                if clips and not failed and (finite == 1 or self.nonfinite == NONFINITE_SKIP):
                    self.last_norm, self.has_norm = norm, True
            if failed:
                raise MemoryError()
            if not finite:
                if self.nonfinite == NONFINITE_RAISE:
                    from lrcore._validate import nonfinite_error
                    raise nonfinite_error(grads)
                return False
            return True
        finally:
            if arrays != stack_arrays:
                free(arrays)
                free(spans)


cdef inline double clip_coefficient(double norm, double max_norm) noexcept nogil:
    """torch.nn.utils.clip_grad_norm_'s coefficient min(1, max_norm / (norm + 1e-6)), NaN
    propagating as its clamp does (lrcore.optimizers.clip_coefficient in Python)."""
    cdef double coef = max_norm / (norm + 1e-6)
    return 1.0 if coef > 1.0 else coef


def grad_sumsq(list grads):
    """(sum of squares in float64, all finite) of the non-None arrays of `grads`, in the
    kernels' fixed order (see lrc_grad_sumsq); each must be a C-contiguous aligned array of
    a stored format."""
    cdef Py_ssize_t n = len(grads), i, k = 0
    cdef lrc_array *arrays = <lrc_array *>malloc((n + 1) * sizeof(lrc_array))
    cdef double sumsq = 0.0
    cdef int finite, fmt
    cdef int ro = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if arrays == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            if grads[i] is None:
                continue
            fmt = _stored_array(grads[i], ro)
            if fmt < 0 or fmt == LRC_CODES8:
                raise TypeError(f"grads[{i}] must be a C-contiguous aligned array of dtype "
                                f"float32, float64, float16 or bfloat16")
            arrays[k].grad = cnp.PyArray_DATA(<cnp.ndarray>grads[i])
            arrays[k].n = cnp.PyArray_SIZE(<cnp.ndarray>grads[i])
            arrays[k].param = NULL
            arrays[k].buf[0] = arrays[k].buf[1] = arrays[k].buf[2] = NULL
            arrays[k].absmax[0] = arrays[k].absmax[1] = arrays[k].absmax[2] = NULL
            arrays[k].origin = 0
            arrays[k].stochastic = 0
            arrays[k].pfmt = arrays[k].bfmt = arrays[k].gfmt = <lrc_format>fmt
            k += 1
        with nogil:
            finite = lrc_grad_sumsq(arrays, k, _num_threads, &sumsq)
        if finite < 0:
            raise MemoryError()
        return sumsq, bool(finite)
    finally:
        free(arrays)


def step(params, grads, state, *, grad_scale=None):
    """Apply one update of `state`'s optimizer to `params`, in place; return the lr it used.

    params: a C-contiguous writeable ndarray (float32, float64, float16 or bfloat16), or a
    list/tuple of them. grads: the same structure (same count and shapes; dtypes as the table of
    docs/reference.md: float32 params take float32, float16 or bfloat16 grads); never written.
    state: an optimizer state such as lrcore.SGD(...). Update k = state.step_count uses
    lr(k); afterwards state.step_count == k + 1. grad_scale: the loss scale the grads carry;
    the update uses g / grad_scale. On any error (TypeError / ValueError naming the argument)
    nothing has been modified.
    """
    # The steady state runs here without a Python frame: a bound state, arrays in a list or
    # alone. Everything else (first step, tuples, the numpy backend, errors of structure)
    # goes through the state's Python _step.
    global _python_step
    cdef StepCore core
    cdef double rate, scale = 1.0
    cdef object c
    if grad_scale is not None:
        if type(grad_scale) is float and grad_scale > 0 and isfinite(grad_scale):
            scale = grad_scale
        else:
            from lrcore._validate import positive
            scale = positive(grad_scale, "grad_scale")
    if _active:
        c = getattr(state, "_core", None)
        if type(c) is StepCore:
            core = <StepCore>c
            if cnp.PyArray_Check(params) and cnp.PyArray_Check(grads):
                params, grads = [params], [grads]
            if type(params) is list and type(grads) is list and len(params) == len(grads) \
                    and len(params) > 0:
                core.acquire()
                try:
                    if core.signature is not None:
                        rate = core.rate(state)
                        return rate if core.run(params, grads, rate, scale) else 0.0
                finally:
                    core.release()
    if _python_step is None:
        from lrcore.optimizers import python_step
        _python_step = python_step
    return _python_step(params, grads, state, grad_scale=scale)


# ---------------------------------------------------------------------------------------------
# Compact optimizer state: test hooks over the block primitives of src/compact.h
# (8-bit block-wise quantization, stochastic rounding to bfloat16). They run at the vector
# level set_vector_level selects, as the kernels do.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from kernels cimport (lrc_q8_map_bits, lrc_q8_init, lrc_q8_quantize, lrc_q8_quantize_blocks,
                      lrc_q8_dequantize, lrc_q8_dequantize_blocks, lrc_round_bf16_stochastic)

if lrc_q8_init() != 0:      # the code tables' build-time check (see src/compact.h)
    raise ImportError("src/compact.h: the 8-bit code tables failed their build-time check")

Q8_BLOCK = LRC_Q8_BLOCK     # elements per 8-bit block (one absmax each)


cdef cnp.ndarray _compact_operand(object a, str name, int typenum, str what):
    """a, checked to be an ndarray of type number `typenum`, C-contiguous, aligned and in
    native byte order (TypeError naming the argument otherwise)."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array of {what}, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if (cnp.PyArray_TYPE(arr) != typenum or not PyArray_ISNOTSWAPPED(arr)
            or (cnp.PyArray_FLAGS(arr) & need) != need):
        raise TypeError(f"{name} must be a C-contiguous aligned native-order array of {what}, "
                        f"got dtype {arr.dtype} (C-contiguous: {arr.flags.c_contiguous})")
    return arr


cdef int _map_arg(object unsigned) except -1:
    """1 for the unsigned map, 0 for the signed one: unsigned must be a bool (or 0 / 1)."""
    if isinstance(unsigned, (bool, np.bool_)) or (type(unsigned) is int and unsigned in (0, 1)):
        return 1 if unsigned else 0
    raise TypeError(f"unsigned must be a bool, got {unsigned!r}")


cdef uint64_t _uint64_arg(object value, str name) except? 0:
    """value as a uint64: an int in [0, 2**64) (TypeError / ValueError naming it)."""
    import operator
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not 0 <= v < 2 ** 64:
        raise ValueError(f"{name} must be an int in [0, 2**64), got {v}")
    return <uint64_t>v


def q8_map(object unsigned):
    """The dynamic map of src/compact.h (signed: bitsandbytes create_dynamic_map(True), zero
    code 127; unsigned: create_dynamic_map(False), zero code 0) as a float32 (256,) copy."""
    cdef cnp.ndarray out = np.empty(256, dtype=np.uint32)
    cdef uint32_t *o = <uint32_t *>cnp.PyArray_DATA(out)
    cdef int i, u = _map_arg(unsigned)
    for i in range(256):
        o[i] = lrc_q8_map_bits[u][i]
    return out.view(np.float32)


def q8_quantize(x, object unsigned, *, bint blocks=False):
    """(codes, absmax) of x (float32, C-contiguous, any shape) in blocks of Q8_BLOCK elements
    of its flat order: absmax[b] = the float32 of max |bits| over block b, codes (uint8, x's
    shape) the nearest map entries to x * (1 / absmax[b]) (ties to the lower code, NaN to the
    zero code); absmax has ceil(x.size / 256) entries. One lrc_q8_quantize call per block, or
    (blocks=True) one lrc_q8_quantize_blocks call for all."""
    cdef cnp.ndarray xa = _compact_operand(x, "x", cnp.NPY_FLOAT32, "float32")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(xa), nblocks = (n + LRC_Q8_BLOCK - 1) // LRC_Q8_BLOCK
    cdef Py_ssize_t b, start
    cdef cnp.ndarray codes = np.empty_like(xa, dtype=np.uint8)
    cdef cnp.ndarray absmax = np.empty(nblocks, dtype=np.float32)
    cdef const float *xp = <const float *>cnp.PyArray_DATA(xa)
    cdef uint8_t *cp = <uint8_t *>cnp.PyArray_DATA(codes)
    cdef float *ap = <float *>cnp.PyArray_DATA(absmax)
    cdef int uns = _map_arg(unsigned)
    with nogil:
        if blocks:
            lrc_q8_quantize_blocks(xp, uns, cp, ap, n)
        else:
            for b in range(nblocks):
                start = b * LRC_Q8_BLOCK
                ap[b] = lrc_q8_quantize(xp + start, uns, cp + start,
                                        min(<Py_ssize_t>LRC_Q8_BLOCK, n - start))
    return codes, absmax


def q8_dequantize(codes, absmax, object unsigned, *, bint blocks=False):
    """float32 array of codes' shape: map[codes[i]] * absmax[i // 256] (a float32 multiply),
    codes uint8 C-contiguous, absmax float32 C-contiguous (ceil(codes.size / 256),). One
    lrc_q8_dequantize call per block, or (blocks=True) one lrc_q8_dequantize_blocks call."""
    cdef cnp.ndarray ca = _compact_operand(codes, "codes", cnp.NPY_UINT8, "uint8")
    cdef cnp.ndarray aa = _compact_operand(absmax, "absmax", cnp.NPY_FLOAT32, "float32")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(ca), nblocks = (n + LRC_Q8_BLOCK - 1) // LRC_Q8_BLOCK
    cdef Py_ssize_t b, start
    if cnp.PyArray_NDIM(aa) != 1 or cnp.PyArray_DIMS(aa)[0] != nblocks:
        raise ValueError(f"absmax must have shape ({nblocks},) for {n} codes "
                         f"(one entry per block of {LRC_Q8_BLOCK}), got {absmax.shape}")
    cdef cnp.ndarray out = np.empty_like(ca, dtype=np.float32)
    cdef const uint8_t *cp = <const uint8_t *>cnp.PyArray_DATA(ca)
    cdef const float *ap = <const float *>cnp.PyArray_DATA(aa)
    cdef float *op = <float *>cnp.PyArray_DATA(out)
    cdef int uns = _map_arg(unsigned)
    with nogil:
        if blocks:
            lrc_q8_dequantize_blocks(cp, ap, uns, op, n)
        else:
            for b in range(nblocks):
                start = b * LRC_Q8_BLOCK
                lrc_q8_dequantize(cp + start, ap[b], uns, op + start,
                                  min(<Py_ssize_t>LRC_Q8_BLOCK, n - start))
    return out


def rounding_key(seed, step, array, slot):
    """splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ step) ^ array) ^ slot) (uint64
    wrap-around), each argument an int in [0, 2**64): the key of one array's stochastic
    rounding in one update (lrcore/compact.py)."""
    return lrc_rounding_key(_uint64_arg(seed, "seed"), _uint64_arg(step, "step"),
                            _uint64_arg(array, "array"), _uint64_arg(slot, "slot"))


def round_bf16_stochastic(x, key, start=0):
    """uint16 bfloat16 patterns of x (float32, C-contiguous, any shape), element i of the flat
    order being element e = start + i of its array: r = lowbias32((uint32)e ^
    (uint32)splitmix64(key ^ (e >> 32))) >> 16, out = (bits + r) >> 16 (NaN: (bits >> 16) |
    0x40). key: an int in [0, 2**64); start: an int >= 0 with start + x.size <= 2**63 - 1."""
    cdef cnp.ndarray xa = _compact_operand(x, "x", cnp.NPY_FLOAT32, "float32")
    cdef uint64_t k = _uint64_arg(key, "key")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(xa)
    import operator
    try:
        s = operator.index(start)
    except TypeError:
        raise TypeError(f"start must be an int, got {type(start).__name__}") from None
    if not 0 <= s <= INT64_MAX - n:
        raise ValueError(f"start must be an int from 0 to 2**63 - 1 - x.size, got {s}")
    cdef int64_t st = s
    cdef cnp.ndarray out = np.empty_like(xa, dtype=np.uint16)
    with nogil:
        lrc_round_bf16_stochastic(<const float *>cnp.PyArray_DATA(xa),
                                  <uint16_t *>cnp.PyArray_DATA(out), n, k, st)
    return out
