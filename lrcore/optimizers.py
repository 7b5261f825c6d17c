"""Optimizer states: hyperparameters, step counts and moment buffers, and the step itself.

A state is bound to its arrays' shapes and dtypes by its first step, which allocates the
buffers its options need. Everything a step could reject is checked before anything is
written (lrcore._validate), so after an error params and state are exactly as they were.
"""
import math
import numbers
import threading

import numpy as np

from lrcore import _backend, _validate, compact, reference
from lrcore.schedules import LearningRateSchedule


class Optimizer:
    """Base of the optimizer states. Subclasses set the class attributes below (_checks
    validates each hyperparameter and makes it a read-only attribute), pass their keywords to
    this __init__, and name their buffers in _buffers_needed().

    Every optimizer takes keyword-only options besides its hyperparameters:
    nonfinite, max_grad_norm, and the compact state: state_format (None: buffers in the
    params' format; "float32"; "bfloat16", written with stochastic rounding; "8bit",
    block-wise dynamic quantization, lrcore.compact), param_rounding ("stochastic" rounds
    bfloat16 params stochastically), seed (of the stochastic rounding: the random bits are a
    hash of seed, step_count, array index and element index), min_8bit_size (smaller arrays
    keep float32 buffers under "8bit"). layout() says what the buffers are.

    What a step reads and writes (counts, binding, buffers, the lr source) lives in
    self._core: the compiled StepCore of src/_kernels.pyx, or _Core below when the extension
    is absent; the steady-state compiled step reads it without running Python code.
    """

    _kernel_kind = None       # the kind constant of src/_kernels.pyx
    _reference = None         # the lrcore.reference function, called once per array
    _init_only = ()           # hyperparameters used to allocate buffers, not by the update
    _checks = {}              # hyperparameter -> check(value, name): the validated value

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("_checks", {}):    # each a read-only attribute
            setattr(cls, name, property(lambda self, name=name: self._hyper[name],
                                        doc=f"{name} (read-only; load_state_dict sets it)"))

    def __init__(self, lr, nonfinite="propagate", max_grad_norm=None, state_format=None,
                 param_rounding="nearest", seed=0, min_8bit_size=4096, **hyper):
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE))}, "
                             f"got {nonfinite!r}")
        max_grad_norm = _validate.optional_positive(max_grad_norm, "max_grad_norm")
        state_format, param_rounding, seed, min_8bit_size = _validate.compact_options(
            state_format, param_rounding, seed, min_8bit_size)
        self._hyper = hyper = {name: self._checks[name](value, name)
                               for name, value in hyper.items()}
        self._update_hyper = {k: v for k, v in hyper.items() if k not in self._init_only}
        hyper.update(nonfinite=nonfinite, max_grad_norm=max_grad_norm, state_format=state_format,
                     param_rounding=param_rounding, seed=seed, min_8bit_size=min_8bit_size)
        # which writes round stochastically: bit j for buffer slot j, bit 3 for the params
        # (src/kernels.h lrc_array.stochastic)
        rounding = (0b111 if state_format == "bfloat16" else 0) \
            | (1 << _validate.PARAM_SLOT if param_rounding == "stochastic" else 0)
        kernels = _backend._kernels
        if kernels is None:
            self._core = _Core(NONFINITE[nonfinite], max_grad_norm or 0.0)
        else:
            values = self._kernel_values()
            self._core = kernels.StepCore(self._kernel_kind, tuple(
                values.get(name, 0) for name in kernels.HYPER_FIELDS), NONFINITE[nonfinite],
                max_grad_norm or 0.0, seed, rounding)
        self._plateau = None        # the ReduceLROnPlateau attached by its constructor
        self.lr = lr

    # -- the step --------------------------------------------------------------------

    def _step(self, params, grads, grad_scale=1.0):
        """The step in Python: the first step (which binds the state), the numpy backend, and
        whatever the compiled entry point leaves to it (lrcore.step). Serialized with every
        other step on this state by the state's lock."""
        params, grads = _validate.as_lists(params, grads)
        return self._core.locked(self._step_locked, params, grads, grad_scale)

    def _step_locked(self, params, grads, grad_scale):
        core = self._core
        binding = core.signature is None
        calls = core.step_count + core.skipped_steps
        try:
            if binding:     # the first step binds the state; undone below if the step fails
                _validate.check_step(params, grads, None, {})
                arrays = [(_validate.format_of(p.dtype), p.shape) for p in params]
                layout = self.layout(arrays)
                core.bind(_validate.signature_of((p.dtype, p.shape) for p in params),
                          np.zeros(len(params), dtype=np.int64),
                          self._new_buffers(layout, [p.dtype for p in params]), layout)
            lr = self._lr_at(core.step_count)
            updated = self._update(params, grads, lr, grad_scale)
        except BaseException:
            # the update commits its counts with its writes, so unchanged counts mean that
            # nothing was written (even when a KeyboardInterrupt lands after the update)
            if binding and core.step_count + core.skipped_steps == calls:
                core.unbind()
            raise
        if not updated:         # nonfinite="skip": nothing changed but the count of skips
            if binding:
                core.unbind()
            return 0.0
        return lr

    def _update(self, params, grads, lr, grad_scale=1.0, clip_coef=None):
        """The bound core's update on the active backend, after every check, counted
        (step_count, array_steps; skipped_steps for a skip); False if skipped for non-finite
        gradients under nonfinite="skip". The grads are used as g·(1 / grad_scale)·coef,
        coef = clip_coef if given, else this call's clipping coefficient (max_grad_norm)."""
        if _backend.active == "cython":     # checks as _check does, in the same C call
            return self._core.run(params, grads, lr, grad_scale, clip_coef)
        self._check(params, grads)
        return self._reference_update(params, grads, lr, grad_scale, clip_coef)

    def _check(self, params, grads):
        """Raise what _update(params, grads, ...) would raise before writing anything; write
        nothing. An update of several states, all or nothing, checks each before running any."""
        core = self._core
        if _backend.active == "cython":
            core.check(params, grads)
            return
        _validate.check_step(params, grads, core.signature, core.buffers, core.layout)
        _validate.check_counts(core.step_count, core.skipped_steps, core.array_steps.tolist(),
                               grads, core.nonfinite == NONFINITE["skip"])

    def _reference_update(self, params, grads, lr, grad_scale, clip_coef):
        """The numpy backend's update (after the checks), all or nothing: every array's new
        values are computed into copies first, so an exception part-way (np.seterr(all=
        "raise"), MemoryError, Ctrl-C) leaves params and buffers untouched; then the copies
        and counts are committed by _commit. False if skipped for non-finite gradients under
        nonfinite="skip". The same decisions as StepCore.run (src/_kernels.pyx)."""
        core = self._core
        coef, norm = 1.0 if clip_coef is None else clip_coef, None
        if clip_coef is None and core.max_grad_norm > 0:
            sumsq, finite = reference.grad_sumsq(grads)
            norm = math.sqrt(sumsq) / grad_scale
            coef = clip_coefficient(norm, core.max_grad_norm)
        else:
            finite = core.nonfinite == NONFINITE["propagate"] or _validate.all_finite(grads)
        if not finite and core.nonfinite != NONFINITE["propagate"]:
            if core.nonfinite == NONFINITE["raise"]:
                raise _validate.nonfinite_error(grads)
            skip = [lambda n=core.skipped_steps + 1: setattr(core, "skipped_steps", n)]
            if norm is not None:
                skip.append(lambda: setattr(core, "last_grad_norm", norm))
            _commit(skip)
            return False
        factor = (1.0 / grad_scale) * coef
        writes = []     # (target, new value)
        counts = []     # (index, new count)
        slots = _validate.BUFFER_SLOTS[self._kernel_kind]
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            # copies in the type the update computes in (base-class arrays whatever the
            # subclass, e.g. numpy.memmap), stored back to each array's format below
            new_p = reference.widen(p)
            new_g = reference.widen(g)
            new_g = new_g * new_g.dtype.type(factor)
            new_buffers = {name: self._decoded(name, i) for name in self._buffers_needed()}
            self._reference(new_p, new_g, step=int(core.array_steps[i]), lr=lr,
                            **new_buffers, **self._update_hyper)
            writes.append((p, self._stored(new_p, p.dtype, i, _validate.PARAM_SLOT)))
            for name, new in new_buffers.items():
                b = core.buffers[name][i]
                if _validate.stored_format(b.dtype) == "8bit":
                    codes, absmax = compact.quantize(new, name not in _validate.UNSIGNED_BUFFERS)
                    writes += [(b, codes), (core.buffers[name + "_absmax"][i], absmax)]
                else:
                    writes.append((b, self._stored(new, b.dtype, i, slots.index(name))))
            counts.append((i, int(core.array_steps[i]) + 1))
        steps = core.array_steps        # in place: the core owns the array
        _commit([lambda t=t, v=v: np.copyto(t, v) for t, v in writes]
                + [lambda i=i, n=n: steps.__setitem__(i, n) for i, n in counts]
                + [lambda n=core.step_count + 1: setattr(core, "step_count", n)]
                + ([] if norm is None else [lambda: setattr(core, "last_grad_norm", norm)]))
        return True

    def _bind_external(self, signature, array_steps, buffers, layout):
        """Bind this state, until it is bound again, to arrays whose buffers and per-array
        counts live elsewhere (lrcore.torch keeps them in torch.optim's state), so that _check
        and _update run on them (_update updates them in place, array_steps incremented).
        signature: _validate.signature_of the params; layout: self.layout of them. The caller
        numbers each update (_number_next)."""
        self._core.bind(signature, array_steps, buffers, layout)

    def _number_next(self, step_count):
        """Make the next update number `step_count` of an externally kept count (lrcore.torch's
        group "lrcore_step_count"): it keys the stochastic rounding."""
        self._core.step_count = step_count

    def _buffers_needed(self):
        """Names of the buffers the current options need (torch's names)."""
        raise NotImplementedError

    def _buffer_start(self, name):
        """The value a buffer starts at."""
        return 0.0

    def layout(self, arrays):
        """What this state's buffers are for param arrays [(format name, shape)]:
        {buffer name: [(stored format, shape) per array]}: each buffer in the format
        state_format gives the array (_validate.state_format_of), and with state_format="8bit"
        `name + "_absmax"`, float32 of one entry per 256-element block of the 8-bit arrays
        (empty for the arrays below min_8bit_size). ValueError for params the options cannot
        take."""
        h = self._hyper
        formats = []
        for i, (fmt, shape) in enumerate(arrays):
            try:
                formats.append(_validate.state_format_of(fmt, math.prod(shape),
                                                         h["state_format"], h["min_8bit_size"]))
            except ValueError as exc:
                raise ValueError(f"params[{i}] is float64: {exc}") from None
            if fmt == "float16" and h["param_rounding"] == "stochastic":
                raise ValueError(f"param_rounding='stochastic' rounds bfloat16 params; params[{i}] "
                                 f"is float16, which rounds to nearest (param_rounding='nearest')")
        out = {}
        for name in self._buffers_needed():
            out[name] = [(f, shape) for f, (_, shape) in zip(formats, arrays)]
            if h["state_format"] == "8bit":
                out[name + "_absmax"] = [
                    ("float32", (-(-math.prod(shape) // compact.BLOCK) if f == "8bit" else 0,))
                    for f, (_, shape) in zip(formats, arrays)]
        return out

    def _new_buffers(self, layout, dtypes):
        """The buffers of `layout` at their start values (_buffer_start): 8-bit ones quantized,
        the others rounded to nearest in their format, of the param's dtype (dtypes[i]) when
        they share its format (bfloat16 kept as ml_dtypes' or as BFLOAT16_BITS, as given)."""
        buffers = {name: [] for name in layout}
        for name in self._buffers_needed():
            start = self._buffer_start(name)
            for (fmt, shape), dtype in zip(layout[name], dtypes):
                if fmt == "8bit":   # every block holds the same values: quantize one
                    code, absmax = compact.quantize(np.full(1, start, dtype=np.float32),
                                                    name not in _validate.UNSIGNED_BUFFERS)
                    blocks = layout[name + "_absmax"][len(buffers[name])][1]
                    buffers[name].append(np.full(shape, code[0], dtype=np.uint8))
                    buffers[name + "_absmax"].append(np.full(blocks, absmax[0], dtype=np.float32))
                else:
                    if _validate.format_of(dtype) != fmt:
                        dtype = _validate.dtype_of(fmt)
                    buffers[name].append(reference.full(shape, start, dtype))
                    if name + "_absmax" in layout:
                        buffers[name + "_absmax"].append(np.zeros(0, dtype=np.float32))
        return buffers

    def _decoded(self, name, i):
        """Buffer `name` of array i as the update computes on it: a new float32 (float64 for
        float64 params) array; 8-bit codes dequantized."""
        b = self._core.buffers[name][i]
        if _validate.stored_format(b.dtype) == "8bit":
            return compact.dequantize(b, self._core.buffers[name + "_absmax"][i],
                                      name not in _validate.UNSIGNED_BUFFERS)
        return reference.widen(b)

    def _stored(self, x, dtype, i, slot):
        """Computed values x stored as `dtype` for slot `slot` of array i: bfloat16 written
        with stochastic rounding when the options say so (keyed by seed, step_count, i, slot),
        else reference.narrow (nearest)."""
        h = self._hyper
        stochastic = (h["param_rounding"] == "stochastic" if slot == _validate.PARAM_SLOT
                      else h["state_format"] == "bfloat16")
        if stochastic and _validate.format_of(dtype) == "bfloat16":
            key = compact.rounding_key(h["seed"], self._core.step_count, i, slot)
            return compact.round_bf16_stochastic(x, key).reshape(np.shape(x)).view(dtype)
        return reference.narrow(x, dtype)

    def _kernel_values(self):
        """Hyperparameters by the kernels' field names (_kernels.HYPER_FIELDS); absent ones are 0."""
        return self._hyper

    # -- learning rate ---------------------------------------------------------------

    @property
    def lr(self):
        """The learning rate as given: a number, an lrcore schedule, or a callable step -> float."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if not callable(value):
            value = _validate.real(value, "lr")
        self._lr = value
        # what the compiled step evaluates: a rate, a compiled schedule, or None for a
        # Python callable (called through _lr_at)
        if isinstance(value, float):
            self._core.lr = value
        elif isinstance(value, LearningRateSchedule) and _backend._kernels is not None:
            self._core.lr = value._compiled()
        else:
            self._core.lr = None

    def _lr_at(self, step):
        """The rate of update number `step`: a number as it is; a schedule's or callable's
        value scaled and floored (_scaled)."""
        if not callable(self._lr):
            return self._lr
        return self._scaled(self._schedule_at(step))

    def _scaled(self, value):
        """A schedule's or callable's value as a step uses it: max(value·lr_scale, lr_floor),
        the factor and floor of lrcore.ReduceLROnPlateau (1 and -inf without one). The same
        double operations as StepCore.rate (src/_kernels.pyx)."""
        core = self._core
        rate = value * core.lr_scale
        return core.lr_floor if rate < core.lr_floor else rate

    def _schedule_at(self, step):
        """The value of the schedule or callable `lr` at `step`, checked, before any
        ReduceLROnPlateau factor."""
        if isinstance(self._lr, LearningRateSchedule):
            # a schedule's value is used as computed (NoisyLinearCosineDecay may dip below 0)
            value = self._lr(step)
            if not math.isfinite(value):
                raise ValueError(f"lr schedule gave {value} at step {step}; expected a finite number")
            return value
        value = self._lr(step)
        try:
            return _validate.real(value, f"lr({step})")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc} (returned by the lr callable)") from None

    @property
    def plateau(self):
        """The lrcore.ReduceLROnPlateau that lowers this state's rate, or None (restored by
        load_state_dict and lrcore.load with the rest of the state)."""
        return self._plateau

    @property
    def current_lr(self):
        """The learning rate the next step will use: lr evaluated at step_count (a schedule's
        or callable's value with the attached ReduceLROnPlateau's factor and floor)."""
        return self._lr_at(self._core.step_count)

    # -- counts and buffers ----------------------------------------------------------

    @property
    def step_count(self):
        """Number of completed steps; update k uses lr(k), bias corrections t = k + 1."""
        return self._core.step_count

    @property
    def max_grad_norm(self):
        """The global gradient-norm bound of every step (None: no clipping; read-only)."""
        return self._hyper["max_grad_norm"]

    nonfinite = property(lambda self: self._hyper["nonfinite"],
                         doc="What a step does with NaN / inf gradients: 'propagate', 'skip' or "
                             "'raise' (read-only).")
    state_format = property(lambda self: self._hyper["state_format"],
                            doc="The buffers' format option: None, 'float32', 'bfloat16' or "
                                "'8bit' (read-only).")
    param_rounding = property(lambda self: self._hyper["param_rounding"],
                              doc="How bfloat16 params are rounded: 'nearest' or 'stochastic' "
                                  "(read-only).")
    seed = property(lambda self: self._hyper["seed"],
                    doc="The seed of the stochastic rounding (read-only).")
    min_8bit_size = property(lambda self: self._hyper["min_8bit_size"],
                             doc="Arrays with fewer elements keep float32 buffers under "
                                 "state_format='8bit' (read-only).")

    @property
    def last_grad_norm(self):
        """The gradient norm (before clipping, of g / grad_scale) of the last step that
        computed one (max_grad_norm set; a step skipped for non-finite gradients included),
        else None."""
        return self._core.last_grad_norm

    @property
    def skipped_steps(self):
        """Steps skipped under nonfinite="skip" (they leave step_count alone)."""
        return self._core.skipped_steps

    @property
    def array_steps(self):
        """Per array, how many updates it has received (drives the first-momentum-step rule)."""
        return self._core.array_steps.tolist()

    @property
    def state_bytes(self):
        """Bytes all buffers occupy (codes and absmax included); 0 before the first step."""
        return sum(b.nbytes for arrays in self._core.buffers.values() for b in arrays)

    def buffer_values(self, name):
        """Buffer `name` decoded: [one new array per param array], float32 (float64 for
        float64 params), 8-bit codes dequantized (map[code]·absmax) and bfloat16 widened.
        ValueError for a name this state does not have (the _absmax arrays are not buffers
        of their own)."""
        core = self._core
        if name not in self._buffers_needed() or name not in core.buffers:
            raise ValueError(f"name must be one of this state's buffers "
                             f"{list(self._buffers_needed()) if core.buffers else []}, got {name!r}")
        return core.locked(lambda: [self._decoded(name, i) for i in range(len(core.buffers[name]))])

    @property
    def buffers(self):
        """{name: [one read-only view per param array]}; {} before the first step."""
        out = {}
        for name, arrays in self._core.buffers.items():
            views = []
            for b in arrays:
                v = b.view()
                v.flags.writeable = False
                views.append(v)
            out[name] = views
        return out

    # -- state_dict ------------------------------------------------------------------

    def state_dict(self):
        """A snapshot with copies of the buffers (later steps do not change it), taken under
        the state's lock, so it is of one state that existed even while other threads step:
        {"optimizer", "lr", "hyperparameters", "step_count", "array_steps",
        "arrays": [(dtype name, shape) per param array, as bound by the first step],
        "buffers": {name: [array per param]}}, and "plateau" (ReduceLROnPlateau.state_dict())
        when a ReduceLROnPlateau lowers this state's rate."""
        return self._core.locked(self._state_dict_locked)

    def _state_dict_locked(self):
        core = self._core
        arrays = [] if core.signature is None else _validate.describe(core.signature)
        return {
            "optimizer": type(self).__name__,
            "lr": self._lr,
            "hyperparameters": dict(self._hyper),
            "step_count": core.step_count,
            "skipped_steps": core.skipped_steps,
            "array_steps": core.array_steps.tolist(),
            "arrays": [(fmt, shape) for fmt, shape in arrays],
            "buffers": {name: [b.copy() for b in bufs] for name, bufs in core.buffers.items()},
            **({"quantization_maps": {"signed": compact.dynamic_map(True).copy(),
                                      "unsigned": compact.dynamic_map(False).copy()}}
               if self._hyper["state_format"] == "8bit" else {}),
            **({} if self._plateau is None else {"plateau": self._plateau._snapshot()}),
        }

    def load_state_dict(self, state_dict):
        """Restore a state_dict() of the same optimizer class, hyperparameters included.

        Everything is checked before anything changes: a dict of another optimizer, a missing
        key, counts that are not ints in [0, 2**63 - 1] (the kernels keep them as int64),
        shapes that are not ints >= 0 fitting int64, or buffers that do not match the options
        and arrays raise ValueError and leave this state as it was. Buffers are copied in.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        name = type(self).__name__
        if state_dict.get("optimizer") != name:
            raise ValueError(f"state_dict must come from {name}.state_dict(), got one from "
                             f"{state_dict.get('optimizer')!r}")
        keys = ("lr", "hyperparameters", "step_count", "array_steps", "arrays", "buffers")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict is missing {', '.join(missing)}")
        if not isinstance(state_dict["hyperparameters"], dict):
            raise ValueError(f"state_dict['hyperparameters'] must be a dict, got "
                             f"{type(state_dict['hyperparameters']).__name__}")
        plateau = state_dict.get("plateau")     # absent when no ReduceLROnPlateau is attached
        if plateau is not None:
            from lrcore.plateau import ReduceLROnPlateau
            plateau = ReduceLROnPlateau._checked_state_dict(plateau, "state_dict['plateau']")
        fresh = type(self)(lr=state_dict["lr"], **state_dict["hyperparameters"])
        int64_max = _validate.INT64_MAX

        def is_count(n):        # an int the kernels can hold as int64, >= 0
            return (not isinstance(n, bool) and isinstance(n, numbers.Integral)
                    and 0 <= n <= int64_max)

        def shown(n):           # repr(10**5000) itself raises ValueError (int digit limit)
            if isinstance(n, numbers.Integral) and abs(n) > int64_max:
                return "an int outside int64"
            return repr(n)

        for key in ("step_count", "skipped_steps"):
            n = state_dict.get(key, 0)          # skipped_steps is absent from older dicts
            if not is_count(n):
                raise ValueError(f"state_dict[{key!r}] must be an int in [0, 2**63 - 1], "
                                 f"got {shown(n)}")
        entries = state_dict["arrays"]
        if not isinstance(entries, (list, tuple)):
            entries = [None]            # reported below as a malformed entry
        arrays = []
        for entry in entries:
            try:
                fmt, shape = entry
                fmt = fmt if fmt in _validate.FORMATS else None     # names, as state_dict()
                shape = tuple(shape)
            except (TypeError, ValueError, KeyError):
                fmt, shape = None, (-1,)
            if (fmt is None or not all(is_count(n) for n in shape)
                    or math.prod(shape) > int64_max):
                raise ValueError(f"state_dict['arrays'] must list (dtype name, shape) pairs, "
                                 f"the dtype one of {', '.join(_validate.FORMATS)}, each shape "
                                 f"a tuple of ints >= 0 whose product fits int64")
            arrays.append((fmt, tuple(int(n) for n in shape)))
        steps = state_dict["array_steps"]
        if (not isinstance(steps, (list, tuple)) or len(steps) != len(arrays)
                or not all(is_count(s) for s in steps)):
            raise ValueError(f"state_dict['array_steps'] must hold {len(arrays)} ints in "
                             f"[0, 2**63 - 1]")
        layout = fresh.layout(arrays) if arrays else {}
        buffers = state_dict["buffers"]
        if not isinstance(buffers, dict) or sorted(buffers) != sorted(layout):
            raise ValueError(f"state_dict['buffers'] must hold {list(layout)} for these options, "
                             f"got {list(buffers) if isinstance(buffers, dict) else buffers!r}")
        for key, want in layout.items():
            bufs = buffers[key]
            if not isinstance(bufs, (list, tuple)) or len(bufs) != len(arrays) or any(
                    not isinstance(b, np.ndarray) or _validate.stored_format(b.dtype) != fmt
                    or not b.dtype.isnative or b.shape != shape
                    for b, (fmt, shape) in zip(bufs, want)):
                raise ValueError(f"state_dict['buffers'][{key!r}] must hold one array per "
                                 f"param, of formats and shapes {want}")
        maps = state_dict.get("quantization_maps")     # absent from dicts without 8-bit state
        if maps is not None and not (isinstance(maps, dict) and sorted(maps) == ["signed", "unsigned"]
                                     and all(np.array_equal(np.asarray(maps[k]), compact.dynamic_map(k == "signed"))
                                             for k in maps)):
            raise ValueError("state_dict['quantization_maps'] must be lrcore's dynamic maps "
                             "{'signed', 'unsigned'}: 8-bit codes of other maps cannot be decoded")
        core = fresh._core
        core.step_count = int(state_dict["step_count"])
        core.skipped_steps = int(state_dict.get("skipped_steps", 0))
        if arrays:
            core.bind(_validate.signature_of((_validate.dtype_of(f), s) for f, s in arrays),
                      np.array(steps, dtype=np.int64),
                      {key: [np.array(b, order="C", copy=True) for b in buffers[key]]
                       for key in layout}, layout)
        if plateau is not None:     # the rate's factor and floor live in the core
            core.lr_scale, core.lr_floor = plateau["lr_scale"], plateau["min_lr"]
        # under the current core's lock: a step running in another thread finishes first
        self._core.locked(self._adopt, fresh, plateau)

    def _adopt(self, fresh, plateau=None):
        """Take over another state's lr, hyperparameters and core (load_state_dict), and the
        checked ReduceLROnPlateau settings `plateau` (None: no controller stays attached)."""
        self._lr, self._hyper, self._update_hyper, self._core = \
            fresh._lr, fresh._hyper, fresh._update_hyper, fresh._core
        if plateau is None:
            self._plateau = None
        else:
            from lrcore.plateau import ReduceLROnPlateau
            self._plateau = ReduceLROnPlateau._restored(self, self._plateau, plateau)

    def __repr__(self):
        args = [f"lr={self._lr!r}"] + [f"{k}={v!r}" for k, v in self._hyper.items()]
        return f"{type(self).__name__}({', '.join(args)})"


NONFINITE = {"propagate": 0, "skip": 1, "raise": 2}     # as _kernels.NONFINITE_*


def _commit(operations):
    """Run every operation (each idempotent: a copy or an assignment of a final value) to the
    end, even if an exception raised by a signal handler (KeyboardInterrupt) lands part-way:
    the interrupted operation is run again and the exception re-raised once all are done, so
    the numpy backend's writes and counts land together or, had it come earlier, not at all."""
    pending, index, retries = None, 0, 0
    while index < len(operations):
        try:
            while index < len(operations):
                operations[index]()
                index += 1
                retries = 0
        except BaseException as exc:     # noqa: BLE001 - re-raised below
            pending = pending or exc
            retries += 1
            if retries > 100:            # not an interrupt: the operation itself fails
                raise
    if pending is not None:
        raise pending


class _Core:
    """A state's counts, binding, buffers and lock when the compiled kernels are absent: the
    same attributes as the compiled StepCore (src/_kernels.pyx), for the numpy backend."""

    def __init__(self, nonfinite=0, max_grad_norm=0.0):
        self.lr = None
        self.lr_scale, self.lr_floor = 1.0, -math.inf   # lrcore.ReduceLROnPlateau's
        self.step_count = 0
        self.skipped_steps = 0
        self.nonfinite = nonfinite
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm = None
        self._lock = threading.Lock()
        self._owner = None
        self.unbind()

    def acquire(self):
        """Take the lock; RuntimeError if this thread holds it (see StepCore.acquire)."""
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(_validate.REENTRANT_USE)
        self._lock.acquire()
        self._owner = me

    def release(self):
        self._owner = None
        self._lock.release()

    def locked(self, fn, *args):
        """fn(*args) holding the lock."""
        self.acquire()
        try:
            return fn(*args)
        finally:
            self.release()

    def bind(self, signature, array_steps, buffers, layout):
        self.signature, self.array_steps, self.buffers = signature, array_steps, buffers
        self.layout = layout

    def unbind(self):
        self.signature, self.array_steps, self.buffers = None, np.zeros(0, dtype=np.int64), {}
        self.layout = None


def python_step(params, grads, state, *, grad_scale=None):
    """lrcore.step without the compiled entry point (and its fallback for what that leaves)."""
    grad_scale = 1.0 if grad_scale is None else _validate.positive(grad_scale, "grad_scale")
    if not isinstance(state, Optimizer):
        raise TypeError(f"state must be an lrcore optimizer state such as lrcore.SGD(...), "
                        f"got {type(state).__name__}")
    return state._step(params, grads, grad_scale)


def clip_coefficient(norm, max_grad_norm):
    """torch.nn.utils.clip_grad_norm_'s coefficient: min(1, max_grad_norm / (norm + 1e-6)),
    in float64; a NaN norm gives NaN (torch's clamp propagates it), an infinite one 0."""
    coef = max_grad_norm / (norm + 1e-6)
    return 1.0 if coef > 1.0 else coef


def grad_norm(grads, grad_scale=1.0):
    """(‖g / grad_scale‖₂ over every non-None array of `grads`, whether all are finite): the
    norm a clipping step computes, in float64 and the kernels' fixed summation order (the
    same for any thread count and either backend)."""
    kernels = _backend._kernels
    if _backend.active == "cython":
        sumsq, finite = kernels.grad_sumsq(list(grads))
    else:
        sumsq, finite = reference.grad_sumsq(grads)
    return math.sqrt(sumsq) / grad_scale, finite


_real, _flag = _validate.real, _validate.flag


def _fraction(value, name):
    return _validate.real(value, name, high=1.0)


def _betas(value, name):
    return _validate.betas(value)


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum: torch.optim.SGD.

    Per element, with g the gradient (negated when `maximize`) and t this array's update number:
        g ← g + weight_decay·p;  b ← g at t = 1, else momentum·b + (1 − dampening)·g;
        g ← g + momentum·b (nesterov) or b;  p ← p − lr·g.
    Buffers: `momentum_buffer` when momentum > 0.
    """

    _kernel_kind = 0
    _reference = staticmethod(reference.sgd)
    _checks = dict(momentum=_real, dampening=_fraction, nesterov=_flag, weight_decay=_real,
                   maximize=_flag)

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False, *, nonfinite="propagate", max_grad_norm=None,
                 state_format=None, param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(lr, nonfinite, max_grad_norm, state_format, param_rounding, seed,
                         min_8bit_size, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, weight_decay=weight_decay, maximize=maximize)
        h = self._hyper
        if h["nesterov"] and (h["momentum"] == 0 or h["dampening"] != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening == 0, "
                             f"got momentum={h['momentum']!r}, dampening={h['dampening']!r}")


    def _buffers_needed(self):
        return ("momentum_buffer",) if self._hyper["momentum"] != 0 else ()


class Adagrad(Optimizer):
    """Adagrad: torch.optim.Adagrad.

    Per element, with t this array's update number and clr = lr / (1 + (t − 1)·lr_decay):
        g ← ±g + weight_decay·p;  s ← s + g²;  p ← p − clr·g / (√s + eps).
    Buffers: `sum` (s), starting at initial_accumulator_value.
    """

    _kernel_kind = 1
    _reference = staticmethod(reference.adagrad)
    _init_only = ("initial_accumulator_value",)
    _checks = dict(lr_decay=_real, weight_decay=_real, initial_accumulator_value=_real,
                   eps=_real, maximize=_flag)

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, maximize=False, *, nonfinite="propagate", max_grad_norm=None,
                 state_format=None, param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(lr, nonfinite, max_grad_norm, state_format, param_rounding, seed,
                         min_8bit_size, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize)

    def _buffers_needed(self):
        return ("sum",)

    def _buffer_start(self, name):
        return self._hyper["initial_accumulator_value"]


class RMSprop(Optimizer):
    """RMSprop: torch.optim.RMSprop.

    Per element: g ← ±g + weight_decay·p;  v ← α·v + (1 − α)·g²;
        centered: a ← α·a + (1 − α)·g (as torch's lerp), d = √(v − a²) + eps;
        else d = √v + eps;
        momentum: b ← momentum·b + g/d, p ← p − lr·b;  else p ← p − lr·g/d.
    Buffers: `square_avg` (v); `grad_avg` (a) when centered; `momentum_buffer` (b) when
    momentum > 0.
    """

    _kernel_kind = 2
    _reference = staticmethod(reference.rmsprop)

    _checks = dict(alpha=_real, eps=_real, weight_decay=_real, momentum=_real, centered=_flag,
                   maximize=_flag)

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False, *, nonfinite="propagate", max_grad_norm=None,
                 state_format=None, param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(lr, nonfinite, max_grad_norm, state_format, param_rounding, seed,
                         min_8bit_size, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)


    def _buffers_needed(self):
        return (("square_avg",) + (("grad_avg",) if self._hyper["centered"] else ())
                + (("momentum_buffer",) if self._hyper["momentum"] != 0 else ()))


class Adam(Optimizer):
    """Adam: torch.optim.Adam (weight decay as an L2 term added to the gradient).

    Per element, with t this array's update number:
        g ← ±g + weight_decay·p;  m ← β1·m + (1 − β1)·g (as torch's lerp);
        v ← β2·v + (1 − β2)·g²;
        v̂ = max(vmax, v) (amsgrad, kept in vmax) or v;
        p ← p − (lr / (1 − β1^t))·m / (√v̂ / √(1 − β2^t) + eps).
    Buffers: `exp_avg` (m), `exp_avg_sq` (v), and `max_exp_avg_sq` (vmax) with amsgrad.
    """

    _kernel_kind = 3
    _reference = staticmethod(reference.adam)
    _decoupled = False
    _checks = dict(betas=_betas, eps=_real, weight_decay=_real, amsgrad=_flag, maximize=_flag)

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, *, nonfinite="propagate", max_grad_norm=None,
                 state_format=None, param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(lr, nonfinite, max_grad_norm, state_format, param_rounding, seed,
                         min_8bit_size, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)


    def _buffers_needed(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self._hyper["amsgrad"] else ())

    def _kernel_values(self):
        beta1, beta2 = self._hyper["betas"]
        return dict(self._hyper, beta1=beta1, beta2=beta2,
                    decoupled_weight_decay=self._decoupled)


class AdamW(Adam):
    """AdamW: torch.optim.AdamW, Adam with decoupled weight decay: p ← p·(1 − lr·weight_decay)
    before the Adam step, instead of adding weight_decay·p to the gradient."""

    _reference = staticmethod(reference.adamw)
    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False, *, nonfinite="propagate", max_grad_norm=None,
                 state_format=None, param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize, nonfinite=nonfinite,
                         max_grad_norm=max_grad_norm, state_format=state_format,
                         param_rounding=param_rounding, seed=seed, min_8bit_size=min_8bit_size)
