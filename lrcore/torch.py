"""torch.optim optimizers that run lrcore's kernels on CPU tensors, in place, without copies.

    import lrcore.torch
    opt = lrcore.torch.Adam(model.parameters(), lr=1e-3)      # as torch.optim.Adam
    loss.backward(); opt.step(); opt.zero_grad()

`SGD`, `Adagrad`, `RMSprop`, `Adam`, `AdamW` take torch.optim's arguments (the keyword-only
foreach / fused / capturable / differentiable are accepted for compatibility; the kernels are
fused and multi-tensor already, capturable / differentiable are not supported). param_groups,
per-group hyperparameters and torch's lr_scheduler work as with torch.optim; a group's `lr`
may also be an lrcore schedule, evaluated at the group's step count (kept in the group as
"lrcore_step_count"). state and state_dict() are torch.optim's own format (`step` as a float32
tensor, buffers under torch's names), so a torch.optim.Adam state_dict loads into
lrcore.torch.Adam and back, and training continues identically.

Each step, per group, the params that have a .grad are viewed as numpy arrays (no copy) and
updated by one compiled call. Tensors must be dense, contiguous, float32 / float64 and on
the CPU; anything else raises a ValueError / TypeError naming the parameter.
"""
import numpy as np

try:
    import torch
except ImportError:
    raise ImportError("lrcore.torch needs torch: pip install 'lrcore[torch]'") from None

from lrcore import optimizers, schedules

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]

_DTYPES = (torch.float32, torch.float64)


class _LrcoreOptimizer(torch.optim.Optimizer):
    """Base: the per-group update through an lrcore state of `_lrcore_class`."""

    _lrcore_class = None
    _has_step = True          # torch keeps state["step"] (all but SGD)

    def __init__(self, params, defaults, foreach=None, fused=None, capturable=False,
                 differentiable=False):
        if capturable or differentiable:
            raise ValueError(f"{type(self).__name__} does not support capturable or "
                             f"differentiable (CUDA graphs / autograd through the step)")
        self._lrcore_state(defaults)          # validates the defaults as lrcore does
        defaults = dict(defaults, foreach=foreach, fused=fused, capturable=False,
                        differentiable=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._step_group(index, group)
        return loss

    def _step_group(self, index, group):
        members = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
        if not members:
            return
        for i, p in members:
            _check_tensor(p, f"param_groups[{index}]['params'][{i}]")
            _check_tensor(p.grad, f"param_groups[{index}]['params'][{i}].grad")
        lr = group["lr"]
        count = group.setdefault("lrcore_step_count", 0)
        rate = lr(count) if isinstance(lr, schedules.LearningRateSchedule) else float(lr)
        state = self._lrcore_state(dict(group, lr=rate))
        names = state._buffers_needed()
        # each param's own update count, read before its state is created
        steps = np.array([self._array_step(self.state[p]) for _, p in members], dtype=np.int64)
        for _, p in members:
            self._init_state(p, state, names)
        params = [p.detach().numpy() for _, p in members]
        grads = [p.grad.detach().numpy() for _, p in members]
        buffers = {name: [self.state[p][name].numpy() for _, p in members] for name in names}
        state._update_external(params, grads, buffers, steps, rate)
        if self._has_step:
            for _, p in members:
                self.state[p]["step"] += 1
        group["lrcore_step_count"] = count + 1

    def _lrcore_state(self, group):
        """An lrcore state with the group's hyperparameters (validated by its constructor)."""
        cls = self._lrcore_class
        return cls(**{key: group[key] for key in _KEYS[cls.__name__]})

    def _init_state(self, p, state, names):
        st = self.state[p]
        if self._has_step and "step" not in st:
            st["step"] = torch.tensor(0.0, dtype=torch.float32)    # as torch.optim keeps it
        for name in names:
            if st.get(name) is None:        # torch stores momentum_buffer=None without momentum
                st[name] = torch.full_like(p, state._buffer_start(name),
                                           memory_format=torch.contiguous_format)

    def _array_step(self, st):
        """How many updates the param has had (drives bias corrections / first steps)."""
        return int(st.get("step", 0))


def _check_tensor(t, name):
    if t.is_sparse:
        raise TypeError(f"{name} is a sparse tensor; lrcore updates dense CPU tensors")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; lrcore.torch runs on CPU tensors")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; lrcore.torch takes float32 or float64")
    if not t.is_contiguous():
        raise ValueError(f"{name} is not contiguous; lrcore updates in place and never copies")


# the lrcore constructor keywords of each optimizer, read from a param group
_KEYS = {
    "SGD": ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize"),
    "Adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    "RMSprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    "Adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
}


class SGD(_LrcoreOptimizer):
    """torch.optim.SGD on lrcore's kernels."""

    _lrcore_class = optimizers.SGD
    _has_step = False

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize),
                         foreach=foreach, fused=fused, differentiable=differentiable)

    def _array_step(self, st):
        # torch's first momentum step is the one that finds no buffer (it copies the gradient)
        return 0 if st.get("momentum_buffer") is None else 1


class Adagrad(_LrcoreOptimizer):
    """torch.optim.Adagrad on lrcore's kernels."""

    _lrcore_class = optimizers.Adagrad

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize),
                         foreach=foreach, fused=fused, differentiable=differentiable)


class RMSprop(_LrcoreOptimizer):
    """torch.optim.RMSprop on lrcore's kernels."""

    _lrcore_class = optimizers.RMSprop

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         foreach=foreach, capturable=capturable, differentiable=differentiable)


class Adam(_LrcoreOptimizer):
    """torch.optim.Adam on lrcore's kernels."""

    _lrcore_class = optimizers.Adam

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize),
                         foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable)


class AdamW(Adam):
    """torch.optim.AdamW on lrcore's kernels."""

    _lrcore_class = optimizers.AdamW

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused)
