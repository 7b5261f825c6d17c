"""Optimizer states: hyperparameters, step counts and moment buffers, and the step itself.

A state is bound to its arrays' shapes and dtypes by its first step, which allocates the
buffers its options need. Everything a step could reject is checked before anything is
written (lrcore._validate), so after an error params and state are exactly as they were.
"""
import numbers

import numpy as np

from lrcore import _backend, _validate, reference


class Optimizer:
    """Base of the optimizer states. Subclasses set the class attributes below and _buffers_needed()."""

    _kernel_kind = None       # the kind constant of src/_kernels.pyx
    _reference = None         # the lrcore.reference function, called once per array

    def __init__(self, lr, **hyper):
        self.lr = lr
        self._hyper = hyper
        self._kernel_hyper = tuple(hyper.get(name, 0) for name in _kernel_hyper_fields())
        self._step_count = 0
        self._array_steps = np.zeros(0, dtype=np.int64)
        self._signature = None     # bound by the first step: see _validate.signature_of()
        self._buffers = {}

    # -- the step --------------------------------------------------------------------

    def _step(self, params, grads):
        params, grads = _validate.as_lists(params, grads)
        lr = self._lr_at(self._step_count)
        if self._signature is None:
            _validate.check_step(params, grads, None, {})
            self._bind(params)
        if _backend.active == "cython":
            _backend._kernels.step(self._kernel_kind, params, grads, self._buffers,
                                   self._kernel_hyper, lr, self._array_steps, self._signature)
        else:
            _validate.check_step(params, grads, self._signature, self._buffers)
            for i, (p, g) in enumerate(zip(params, grads)):
                buffers = {name: arrays[i] for name, arrays in self._buffers.items()}
                self._reference(p, g, step=int(self._array_steps[i]), lr=lr,
                                **buffers, **self._hyper)
            self._array_steps += 1
        self._step_count += 1
        return lr

    def _bind(self, params):
        self._signature = _validate.signature_of((p.dtype, p.shape) for p in params)
        self._array_steps = np.zeros(len(params), dtype=np.int64)
        self._buffers = {name: [np.zeros_like(p) for p in params]
                         for name in self._buffers_needed()}

    def _buffers_needed(self):
        """Names of the buffers the current options need, in the kernels' slot order."""
        raise NotImplementedError

    # -- learning rate ---------------------------------------------------------------

    @property
    def lr(self):
        """The learning rate as given: a number, or a callable step -> float."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if callable(value):
            self._lr = value
        else:
            self._lr = _validate.real(value, "lr")

    def _lr_at(self, step):
        if not callable(self._lr):
            return self._lr
        value = self._lr(step)
        try:
            return _validate.real(value, f"lr({step})")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc} (returned by the lr callable)") from None

    @property
    def current_lr(self):
        """The learning rate the next step will use: lr evaluated at step_count."""
        return self._lr_at(self._step_count)

    # -- counts and buffers ----------------------------------------------------------

    @property
    def step_count(self):
        """Number of completed steps; update k uses lr(k), bias corrections t = k + 1."""
        return self._step_count

    @property
    def array_steps(self):
        """Per array, how many updates it has received (drives the first-momentum-step rule)."""
        return self._array_steps.tolist()

    @property
    def buffers(self):
        """{name: [one read-only view per param array]}; {} before the first step."""
        out = {}
        for name, arrays in self._buffers.items():
            views = []
            for b in arrays:
                v = b.view()
                v.flags.writeable = False
                views.append(v)
            out[name] = views
        return out

    # -- state_dict ------------------------------------------------------------------

    def state_dict(self):
        """A snapshot with copies of the buffers (later steps do not change it):
        {"optimizer", "lr", "hyperparameters", "step_count", "array_steps",
        "arrays": [(dtype name, shape) per param array, as bound by the first step],
        "buffers": {name: [array per param]}}."""
        arrays = [] if self._signature is None else _validate.describe(self._signature)
        return {
            "optimizer": type(self).__name__,
            "lr": self._lr,
            "hyperparameters": dict(self._hyper),
            "step_count": self._step_count,
            "array_steps": self._array_steps.tolist(),
            "arrays": [(dtype.name, shape) for dtype, shape in arrays],
            "buffers": {name: [b.copy() for b in bufs] for name, bufs in self._buffers.items()},
        }

    def load_state_dict(self, state_dict):
        """Restore a state_dict() of the same optimizer class, hyperparameters included.

        Everything is checked before anything changes: a dict of another optimizer, a missing
        key, or buffers that do not match the options and arrays raise ValueError and leave
        this state as it was. Buffers are copied in.
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
        fresh = type(self)(lr=state_dict["lr"], **state_dict["hyperparameters"])
        step_count = state_dict["step_count"]
        if isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral) \
                or step_count < 0:
            raise ValueError(f"state_dict['step_count'] must be an int >= 0, got {step_count!r}")
        try:
            arrays = [(np.dtype(dtype), tuple(int(n) for n in shape))
                      for dtype, shape in state_dict["arrays"]]
        except (TypeError, ValueError):
            arrays = None
        if arrays is None or any(d not in _validate.FLOAT_DTYPES for d, _ in arrays):
            raise ValueError("state_dict['arrays'] must list (float32 or float64, shape) pairs")
        steps = state_dict["array_steps"]
        if (not isinstance(steps, (list, tuple)) or len(steps) != len(arrays) or any(
                isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in steps)):
            raise ValueError(f"state_dict['array_steps'] must hold {len(arrays)} ints >= 0")
        needed = fresh._buffers_needed() if arrays else ()
        buffers = state_dict["buffers"]
        if not isinstance(buffers, dict) or sorted(buffers) != sorted(needed):
            raise ValueError(f"state_dict['buffers'] must hold {list(needed)} for these options, "
                             f"got {list(buffers) if isinstance(buffers, dict) else buffers!r}")
        for key in needed:
            bufs = buffers[key]
            if not isinstance(bufs, (list, tuple)) or len(bufs) != len(arrays) or any(
                    not isinstance(b, np.ndarray) or b.dtype != dtype or b.shape != shape
                    for b, (dtype, shape) in zip(bufs, arrays)):
                raise ValueError(f"state_dict['buffers'][{key!r}] must hold one array per "
                                 f"param, of shapes and dtypes {state_dict['arrays']}")
        self._lr, self._hyper, self._kernel_hyper = fresh._lr, fresh._hyper, fresh._kernel_hyper
        self._step_count = int(step_count)
        self._array_steps = np.array(steps, dtype=np.int64).reshape(len(arrays))
        self._signature = _validate.signature_of(arrays) if arrays else None
        self._buffers = {key: [np.array(b, order="C", copy=True) for b in buffers[key]]
                         for key in needed}

    def __repr__(self):
        args = [f"lr={self._lr!r}"] + [f"{k}={v!r}" for k, v in self._hyper.items()]
        return f"{type(self).__name__}({', '.join(args)})"


def _kernel_hyper_fields():
    if _backend._kernels is not None:
        return _backend._kernels.HYPER_FIELDS
    return ()


def _hyperparameter(name, doc):
    return property(lambda self: self._hyper[name], doc=doc + " (read-only)")


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum: torch.optim.SGD.

    Per element, with g the gradient (negated when `maximize`) and t this array's update number:
        g ← g + weight_decay·p;  b ← g at t = 1, else momentum·b + (1 − dampening)·g;
        g ← g + momentum·b (nesterov) or b;  p ← p − lr·g.
    Buffers: `momentum_buffer` when momentum > 0.
    """

    _kernel_kind = 0
    _reference = staticmethod(reference.sgd)

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False):
        momentum = _validate.real(momentum, "momentum")
        dampening = _validate.real(dampening, "dampening", high=1.0)
        weight_decay = _validate.real(weight_decay, "weight_decay")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if not isinstance(maximize, (bool, np.bool_)):
            raise TypeError(f"maximize must be a bool, got {type(maximize).__name__}")
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening == 0, "
                             f"got momentum={momentum!r}, dampening={dampening!r}")
        super().__init__(lr, momentum=momentum, dampening=dampening, nesterov=bool(nesterov),
                         weight_decay=weight_decay, maximize=bool(maximize))

    momentum = _hyperparameter("momentum", "Momentum factor")
    dampening = _hyperparameter("dampening", "Dampening of the momentum buffer's new term")
    nesterov = _hyperparameter("nesterov", "Whether Nesterov momentum is used")
    weight_decay = _hyperparameter("weight_decay", "L2 penalty added to the gradient")
    maximize = _hyperparameter("maximize", "Whether the objective is maximized")

    def _buffers_needed(self):
        return ("momentum_buffer",) if self._hyper["momentum"] != 0 else ()
