"""torch.optim optimizers that run lrcore's kernels on CPU tensors, in place, without copies.

    import lrcore.torch
    opt = lrcore.torch.Adam(model.parameters(), lr=1e-3)      # as torch.optim.Adam
    loss.backward(); opt.step(); opt.zero_grad()

`SGD`, `Adagrad`, `RMSprop`, `Adam`, `AdamW` take torch.optim's arguments (the keyword-only
foreach / fused / capturable / differentiable are accepted for compatibility; the kernels are
fused and multi-tensor already, capturable / differentiable are not supported). param_groups,
per-group hyperparameters and torch's lr_scheduler work as with torch.optim; `lr` and Adam's
`betas` may be 1-element tensors, read at every step (schedulers write into them); a group's
`lr` may also be an lrcore schedule, evaluated at the group's step count (kept in the group as
"lrcore_step_count"). state and state_dict() are torch.optim's own format (`step` as a float32
tensor, buffers under torch's names), so a torch.optim.Adam state_dict loads into
lrcore.torch.Adam and back, and training continues identically; an older torch's state_dict
(param_groups lacking newer keys) gets torch's defaults when loaded, as torch does.

Each step, per group, the params that have a .grad are viewed as numpy arrays (no copy) and
updated by one compiled call. The views of the params and state buffers, once checked, are
kept for the next step, which views and checks only the grads as long as the group's params,
options and state tensors are the same ones, at the same memory (anything else, e.g.
load_state_dict or `p.data = ...`, makes it check everything again). A param must be a dense (non-overlapping, gap-free) float16 /
bfloat16 / float32 / float64 / complex64 / complex128 CPU tensor in any dimension order
(channels_last included); its grad and state buffers must have its dtype, shape and strides,
so the element-wise update runs on their memory as flat arrays. Complex params are updated as
their real view, as torch.optim does (complex half, torch.complex32, is not supported).
Anything else raises a ValueError / TypeError naming the tensor. Every group is checked before
any is updated, and a step's new state entries are stored only once it has succeeded: a step
that raises leaves params and state as they were.

Mixed precision, as torch's fused optimizers (`fused=True`):
- float16 / bfloat16 params keep their grads and state in their own dtype; the update widens
  every value to float32, computes as for float32 params and rounds what it writes back with
  round-to-nearest-even. float16 memory is passed to the kernels as numpy float16, bfloat16
  memory as its uint16 bit patterns (no ml_dtypes needed).
- `max_grad_norm` (keyword of every constructor; a positive finite number, or None): clipping
  fused into the step, as `torch.nn.utils.clip_grad_norm_(all params, max_grad_norm)` before
  it: the L2 norm over every gradient of the step (all param groups; accumulated in float64),
  coef = min(1, max_grad_norm / (norm + 1e-6)), and every group's update uses grad * coef.
  `optimizer.last_grad_norm` is the norm (before clipping) of the last step that computed one
  (None before), a float kept as an attribute: it is not part of state_dict(). Under
  ZeroRedundancyOptimizer each rank's optimizer holds its shard only, so the norm would be the
  shard's: clip with torch there.
- `torch.amp.GradScaler`: `_step_supports_amp_scaling` is True, so `scaler.step(opt)` does not
  unscale the grads itself. It checks them for inf/NaN (the record `scaler.update()` reads), sets
  `opt.grad_scale` (its scale; None after an explicit `scaler.unscale_(opt)`) and
  `opt.found_inf`, and calls `opt.step()`. The step divides the grads by grad_scale inside the
  update (the norm of `max_grad_norm` is that of the unscaled grads), and when found_inf is
  nonzero it changes nothing at all: params, state (no entries created), `step` counts,
  "lrcore_step_count", last_grad_norm. `scaler.unscale_(opt)`, `clip_grad_norm_`,
  `scaler.step(opt)` works as well. Unlike torch's fused kernels, which write the unscaled
  gradient back into .grad, lrcore never writes the grads: after `scaler.step(opt)` they are
  still scaled.

Compact optimizer state (docs/reference.md): every constructor takes lrcore's
keyword-only `state_format=None | "float32" | "bfloat16" | "8bit"`, `param_rounding="nearest"
| "stochastic"`, `seed=0` and `min_8bit_size=4096`. They are kept in each param group like
torch's hyperparameters (so groups may differ, and state_dict() carries them; a group without
them, as one loaded from a torch.optim state_dict, has the defaults), and each step gives them
to the lrcore state of the group, whose update runs on the tensors' memory (bound to
it by lrcore.Optimizer._bind_external). A param's state holds, under torch's buffer names:
- a buffer whose format is the param's own (state_format None; "float32" for float32 params):
  a tensor of the param's dtype, shape and strides, as torch.optim keeps it;
- "float32" / "bfloat16" buffers of other params: a torch.float32 / torch.bfloat16 tensor;
- "8bit" buffers (params of at least min_8bit_size elements; smaller ones keep float32
  buffers, as bitsandbytes does): a torch.uint8 tensor of codes, plus `name + "_absmax"`, a
  1-D contiguous float32 tensor of ceil(numel / 256) block maxima.
Compact buffers have the param's shape and strides (a complex64 param's: those of its real
view, shape + (2,), the array the update runs on), so blocks of 256 count elements in memory
order, as lrcore's step on the flat array does. The buffers start as lrcore's
Optimizer._new_buffers makes them, are converted once into tensors (bfloat16 through its
int16 bit patterns) and are viewed as numpy arrays, without copies. float64 and
complex128 params refuse a compact format, and float16 params param_rounding="stochastic", as
lrcore does. The stochastic rounding is keyed by (seed, the group's "lrcore_step_count",
position of the param among the group's params that have a grad, buffer): a replay or a
resumed run gives the same bits, and two groups with the same seed draw the same bits for
their k-th params (give them different seeds if that correlation matters). load_state_dict()
keeps the saved dtype of a compact group's state tensors (torch.optim would cast every state
tensor of a floating param to the param's dtype: uint8 codes to float values, float32 moments
of a bfloat16 param to bfloat16), and the next step checks them: a state tensor of another
dtype, shape or layout than the options give raises the errors above, naming the tensor.

Threads: once lrcore.torch is imported, every parallel lrcore step of the process (lrcore.step
as well) runs on the threads of the OpenMP runtime torch loaded, as torch's own ops do, when
torch runs on one (torch.backends.openmp.is_available()); a forked child goes back to
lrcore's own pool.
"""
import operator
import re

import numpy as np

try:
    import torch
except ImportError:
    raise ImportError("lrcore.torch needs torch: pip install 'lrcore[torch]'") from None

from lrcore import _backend, _validate, optimizers, schedules

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]

# torch runs forward and backward on an OpenMP runtime whose threads keep polling for
# milliseconds after backward; from here on lrcore's parallel steps run on that runtime's
# threads too, instead of on its own pool competing with them for the cores (src/pool.h)
if _backend._kernels is not None and torch.backends.openmp.is_available():
    _backend._kernels.share_openmp_runtime(True)

# complex params are updated as their real view (torch.view_as_real), as torch.optim does;
# half-precision params keep grads and state in their dtype, the math in float32
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
           torch.complex128)
_DTYPE_NAMES = "float16, bfloat16, float32, float64, complex64 or complex128"

# torch.optim's wording for an invalid argument (its test-suite matches it), by the argument
# name lrcore's validation messages start with; lrcore's message follows in parentheses
_TORCH_WORDING = {
    "lr": "Invalid learning rate: {}",
    "eps": "Invalid epsilon value: {}",
    "betas[0]": "Invalid beta parameter at index 0: {}",
    "betas[1]": "Invalid beta parameter at index 1: {}",
    "weight_decay": "Invalid weight_decay value: {}",
    "momentum": "Invalid momentum value: {}",
    "lr_decay": "Invalid lr_decay value: {}",
    "initial_accumulator_value": "Invalid initial_accumulator_value value: {}",
    "alpha": "Invalid alpha value: {}",
    "nesterov=True": "Nesterov momentum requires a momentum and zero dampening",
}


class _LrcoreOptimizer(torch.optim.Optimizer):
    """Base: the per-group update through an lrcore state of `_lrcore_class`."""

    _lrcore_class = None
    _has_step = True          # torch keeps state["step"] (all but SGD)
    _group_defaults = {}      # what torch's __setstate__ fills into older param_groups
    # torch.amp.GradScaler.step leaves the unscaling to step(): it sets self.grad_scale and
    # self.found_inf instead (as for torch's fused optimizers), see _amp_arguments
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults, foreach=None, fused=None, capturable=False,
                 differentiable=False, max_grad_norm=None, state_format=None,
                 param_rounding="nearest", seed=0, min_8bit_size=4096):
        if capturable or differentiable:
            raise ValueError(f"{type(self).__name__} does not support capturable or "
                             f"differentiable (CUDA graphs / autograd through the step)")
        # the compact-state options are group hyperparameters (lrcore's constructor checks them)
        defaults = dict(defaults, state_format=state_format, param_rounding=param_rounding,
                        seed=seed, min_8bit_size=min_8bit_size)
        lr = defaults["lr"]      # a schedule is validated as lrcore does, not evaluated
        self._lrcore_state(defaults, _scalar(lr, "lr") if torch.is_tensor(lr) else lr, None)
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm = None
        self._group_views = {}      # param group index -> _GroupViews of its last step
        self._kept_states = {}      # param group index -> _KeptState of its last step
        defaults = dict(defaults, foreach=foreach, fused=fused, capturable=False,
                        differentiable=False)
        super().__init__(params, defaults)

    @property
    def max_grad_norm(self):
        """The global gradient-norm bound of every step (clip_grad_norm_'s max_norm), or None:
        an attribute of the optimizer, not part of state_dict()."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = _validate.optional_positive(value, "max_grad_norm")

    def __getstate__(self):
        # torch.optim.Optimizer pickles (and deep-copies) defaults, state and param_groups
        # only: the clipping bound and the last norm go along, as the optimizer's attributes
        return dict(super().__getstate__(), _max_grad_norm=self._max_grad_norm,
                    last_grad_norm=self.last_grad_norm)

    def __setstate__(self, state):
        """torch.optim.Optimizer.load_state_dict (and unpickling) end here: as torch's own
        optimizers, fill in the param_group keys an older torch did not save and make an
        old plain-number `step` a tensor. load_state_dict keeps max_grad_norm and
        last_grad_norm as they are (they are not part of state_dict())."""
        super().__setstate__(state)
        # an optimizer pickled before max_grad_norm existed
        self.__dict__.setdefault("_max_grad_norm", None)
        self.__dict__.setdefault("last_grad_norm", None)
        self._group_views = {}      # views of the tensors before the load are stale
        self._kept_states = {}
        for group in self.param_groups:
            for key, value in self._group_defaults.items():
                group.setdefault(key, value)
            if self._has_step:
                for p in group["params"]:
                    st = self.state.get(p)
                    if st and "step" in st and not torch.is_tensor(st["step"]):
                        st["step"] = torch.tensor(float(st["step"]), dtype=torch.float32)

    def load_state_dict(self, state_dict):
        """torch.optim.Optimizer.load_state_dict, except that the state tensors of a group
        with a compact state_format keep the dtype they were saved with.

        torch casts every state tensor of a floating-point param (but `step`) to the param's
        dtype, which would turn 8-bit codes into float values and round float32 moments of
        bfloat16 params to bfloat16. So the dict as torch loads it (after any pre-hooks) is
        noted, and before any post-hook runs, the state tensors of the groups whose loaded
        state_format is not None are set to the saved ones (moved to the param's device
        only; like torch, a tensor already there is taken as it is, not copied). The next
        step checks them against the options."""
        loaded = {}

        def note(optimizer, state_dict):        # runs after the user's pre-hooks
            loaded["dict"] = state_dict

        def restore(optimizer):                 # runs before the user's post-hooks
            sd = loaded["dict"]
            for group, saved in zip(self.param_groups, sd["param_groups"]):
                if _compact(group, "state_format") is None:
                    continue
                for pid, p in zip(saved["params"], group["params"]):
                    for key, value in sd["state"].get(pid, {}).items():
                        if key != "step" and torch.is_tensor(value):
                            self.state[p][key] = value.to(device=p.device)

        handles = [self.register_load_state_dict_pre_hook(note),
                   self.register_load_state_dict_post_hook(restore, prepend=True)]
        try:
            super().load_state_dict(state_dict)
        finally:
            for handle in handles:
                handle.remove()

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() if given.

        All or nothing: every group is checked (its new state entries prepared aside) before
        any is updated, so an error leaves params and optimizer state as they were. Under
        torch.amp.GradScaler, a step whose found_inf is set changes nothing.

        torch.optim runs the whole step under torch.no_grad(); here only the code that makes
        or changes tensors through torch does (_new_views, the plain `step += 1`): the rest
        reads tensors' metadata and writes their memory through numpy, which autograd never
        records (a grad-mode switch cost about 80 µs per step in a training loop)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = self._amp_arguments()
        updates = [self._prepare(index, group) for index, group in enumerate(self.param_groups)]
        updates = [u for u in updates if u is not None]
        if found_inf:
            # as torch's fused kernels: an inf/NaN step is skipped; the checks still run, so a
            # step refuses the same tensors whether or not the scaler found an inf
            for check, _, _ in updates:
                check()
            return loss
        # the kernels check a call before writing anything: the first group to run needs no
        # check of its own, the others are checked before it runs
        for check, _, _ in updates[1:]:
            check()
        clip_coef = norm = None
        if self._max_grad_norm is not None and updates:
            # one norm over the grads of every group (clip_grad_norm_ over all params)
            norm, _ = optimizers.grad_norm([g for _, _, grads in updates for g in grads],
                                           grad_scale)
            clip_coef = optimizers.clip_coefficient(norm, self._max_grad_norm)
        for _, update, _ in updates:
            update(grad_scale, clip_coef)
        if norm is not None:
            self.last_grad_norm = float(norm)
        return loss

    def _amp_arguments(self):
        """(grad_scale, found_inf) of this step from what torch.amp.GradScaler.step sets on
        the optimizer before calling step() (and deletes after): `grad_scale`, the scale
        tensor (None once the scaler has unscaled the grads itself, through unscale_), and
        `found_inf`, a tensor nonzero when the scaler's check found an inf/NaN gradient.
        Without a scaler: (1.0, False). grad_scale is read only for a step that runs."""
        found = getattr(self, "found_inf", None)
        if torch.is_tensor(found):
            found = _scalar(found, "found_inf")
        found_inf = found is not None and found != 0     # NaN counts as found
        scale = getattr(self, "grad_scale", None)
        if scale is None or found_inf:
            return 1.0, found_inf
        if torch.is_tensor(scale):
            scale = _scalar(scale, "grad_scale")
        return _validate.positive(scale, "grad_scale (the loss scale GradScaler set on the "
                                          "optimizer)"), False

    def _prepare(self, index, group):
        """Check the group's tensors and hyperparameters and set up its update without
        changing anything: returns (check, update, grads), check() raising what the kernels
        would refuse, update(grad_scale, clip_coef) running them and storing the state it
        created, grads the group's gradients as numpy arrays; None if no param of the group
        has a grad.

        The params and state buffers, as numpy views, are kept from one step to the next
        (_GroupViews): a step whose group, options, params and state tensors are the ones of
        the last step, unchanged, views and checks only the grads."""
        members = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
        if not members:
            return None
        count = group.get("lrcore_step_count", 0)
        lr = group["lr"]
        if isinstance(lr, schedules.LearningRateSchedule):
            rate = lr(count)
        else:               # a tensor is read now: torch's schedulers write into it
            rate = _scalar(lr, "lr") if torch.is_tensor(lr) else lr
        state, kept = self._lrcore_state(group, rate, self._kept_states.pop(index, None))
        options = (type(state), tuple(state._buffers_needed()),
                   *(_compact(group, key) for key in ("state_format", "min_8bit_size",
                                                      "param_rounding")))
        views = self._group_views.get(index)
        if views is not None and views.valid(group, options, members, self.state):
            grads, created = views.grads(members, index), {}
        else:
            with torch.no_grad():
                views, grads, created = self._new_views(index, group, options, members, state)
        # read anew at every step (a user may set a state["step"]); the bound state reads them
        views.array_steps[:] = self._array_steps(views)

        def renamed(exc):   # lrcore's array names (tied params...) as torch users know them
            return type(exc)(_torch_names(str(exc), index, members))

        def bind():
            # the state stays bound to the views from one step to the next while both are
            # kept: only the number of the update changes
            if views.bound is not state:
                state._bind_external(views.signature, views.array_steps, views.buffers,
                                     views.layout)
                views.bound = state
            state._number_next(count)

        def check():
            try:
                bind()
                state._check(views.params, grads)
            except (TypeError, ValueError) as exc:
                raise renamed(exc) from None

        def update(grad_scale, clip_coef):
            try:
                bind()
                state._update(views.params, grads, rate, grad_scale, clip_coef)
            except (TypeError, ValueError) as exc:
                raise renamed(exc) from None
            for p, new in created.items():
                if new:
                    self.state[p].update(new)
            if views.steps is not None:
                # in place, through views of the params' state["step"]: storing the sum
                # made in double is the float32 / float64 `step += 1` (below 2**53 the sum is
                # exact, so it is rounded once), at a twentieth of a numpy in-place add's cost
                for step in views.steps:
                    step[()] = step.item() + 1.0
            elif self._has_step:
                with torch.no_grad():       # as torch.optim, whatever the step tensor
                    for _, p in members:
                        self.state[p]["step"] += 1
            group["lrcore_step_count"] = count + 1
            self._group_views[index] = views
            if kept is not None:
                self._kept_states[index] = kept
        return check, update, grads

    def _new_views(self, index, group, options, members, state):
        """The full check of a group's params, grads and state (_prepare): returns
        (_GroupViews of the group, the grads as numpy arrays, {param: the state entries this
        step creates}), new state buffers made aside (stored by the update)."""
        for i, p in members:
            name = f"param_groups[{index}]['params'][{i}]"
            _check_param(p, name)
            _check_like(p.grad, p, f"{name}.grad")
        names = options[1]
        params = [_flat(p) for _, p in members]
        grads = [_flat(p.grad) for _, p in members]
        # what each buffer is stored as, for the arrays the update runs on (lrcore's rule:
        # state_format, min_8bit_size); refuses float64 params with a compact format
        try:
            layout = state.layout([(_validate.format_of(a.dtype), a.shape) for a in params])
        except ValueError as exc:
            raise type(exc)(_torch_names(str(exc), index, members)) from None
        created = {}        # param -> the state entries this step creates (tensors hash by id)
        for k, (i, p) in enumerate(members):
            st, new = self.state.get(p, {}), created.setdefault(p, {})
            if self._has_step and "step" not in st:
                new["step"] = torch.tensor(0.0, dtype=torch.float32)   # as torch.optim keeps it
            fresh = None
            for name in names:
                fmt, absmax = layout[name][k][0], name + "_absmax"
                if st.get(name) is not None:
                    _check_state(st, name, p, fmt, layout[absmax][k][1] if fmt == "8bit" else None,
                                 group, f"param_groups[{index}]['params'][{i}]'s state")
                elif name not in new:   # torch stores momentum_buffer=None without momentum
                    if fmt == _OWN_FORMAT[p.dtype]:     # stored as torch.optim stores it
                        new[name] = _new_buffer(p, state._buffer_start(name))
                        continue
                    if fresh is None:   # lrcore's start values, in their stored formats
                        own = {key: [spec[k]] for key, spec in layout.items()}
                        fresh = state._new_buffers(own, [params[k].dtype])
                    new[name] = _state_tensor(p, fmt, fresh[name][0])
                    if fmt == "8bit":
                        new[absmax] = torch.from_numpy(fresh[absmax][0].copy())

        # each param's state tensors the update runs on: its buffers, the absmax of each
        # 8-bit one, and the step count; None for the absmax a buffer of another format must
        # not have (_check_state)
        tensors = []
        for k, (_, p) in enumerate(members):
            st = dict(self.state.get(p, {}), **created[p])
            entries = [(name, st[name]) for name in names]
            entries += [(name + "_absmax", st[name + "_absmax"] if layout[name][k][0] == "8bit"
                         else None) for name in names]
            if self._has_step:
                entries.append(("step", st["step"]))
            tensors.append(entries)
        buffers = {key: [] for key in layout}
        for entries in tensors:
            entries = dict(entries)
            for key, arrays in buffers.items():
                # (for the params that keep float32 buffers under state_format="8bit", lrcore's
                # layout has an empty absmax array)
                arrays.append(np.zeros(0, np.float32) if entries[key] is None
                              else _flat(entries[key]))
        views = _GroupViews(group, options, members, params, buffers, layout, tensors)
        return views, grads, created

    def _array_steps(self, views):
        """Each param's own update count (drives bias corrections / first steps), read before
        this step: its state["step"] (0 for one this step creates)."""
        steps = views.steps if views.steps is not None else [
            t for entries in views.tensors for key, t in entries if key == "step"]
        return list(map(int, steps))

    def _lrcore_class_of(self, group):
        return self._lrcore_class

    def _lrcore_state(self, group, lr, kept):
        """An lrcore state with the group's hyperparameters and learning rate `lr` (a number or
        a schedule), validated by its constructor; torch's wording for what torch refuses.
        Returns (state, a _KeptState of it or None): the state is built anew unless `kept`
        (a _KeptState from a step of this group) was built from the very objects the group
        holds now but its lr, then only its lr is set: a step skips building and validating
        the same values again. None when a hyperparameter can change in place (a tensor, a
        list), which the next step must read anew."""
        cls = self._lrcore_class_of(group)
        keys = _KEYS[cls.__name__]
        given = [group[key] for key in keys] + [_compact(group, key) for key in _COMPACT_DEFAULTS]
        try:
            if kept is not None and kept.cls is cls and all(map(operator.is_, given, kept.given)):
                kept.state.lr = lr
                return kept.state, kept
            values = dict(zip(keys + tuple(_COMPACT_DEFAULTS), given), lr=lr)
            if "betas" in values:
                values["betas"] = _betas_values(values["betas"])
            state = cls(**values)
        except ValueError as exc:
            name = str(exc).split(" ", 1)[0]    # lrcore's messages start with the argument
            wording = _TORCH_WORDING.get(name)
            if wording is None:
                raise
            shown = group["betas"][int(name[6])] if name.startswith("betas[") else group.get(name)
            raise ValueError(f"{wording.format(shown)} ({exc})") from None
        return state, _KeptState(cls, given, state) if _immutable(given) else None


class _KeptState:
    """An lrcore state kept from a group's step for the next (_lrcore_state): its class, the
    objects its hyperparameters were read from and the state."""

    __slots__ = ("cls", "given", "state")

    def __init__(self, cls, given, state):
        self.cls, self.given, self.state = cls, given, state


def _immutable(values):
    """Whether every value is a number, string, None or a tuple of them: objects that cannot
    change in place, so the same object holds the same value."""
    return all(isinstance(v, tuple) and _immutable(v)
               or type(v) in (float, int, bool, str, type(None)) for v in values)


def _scalar(t, name):
    """The value of a 1-element tensor hyperparameter, read at each use."""
    if t.numel() != 1:
        raise ValueError(f"Tensor {name} must be 1-element, got {t.numel()} elements")
    return t.item()


def _betas_values(betas):
    """Adam's betas with tensors read as numbers (lrcore's check names anything else)."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        return betas
    tensors = [torch.is_tensor(b) for b in betas]
    if any(tensors) and not all(tensors):
        raise ValueError(f"betas must be either both floats or both Tensors, got {betas!r}")
    return tuple(_scalar(b, f"betas[{i}]") if is_tensor else b
                 for i, (b, is_tensor) in enumerate(zip(betas, tensors)))


def _is_dense(t):
    """Whether t's elements cover a block of memory exactly once, in whatever dimension order:
    sorted by stride, each dimension's stride is the product of the faster ones' sizes."""
    if t.numel() == 0:
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _check_resolved(t, name):
    """t's memory must hold its values: not a lazy conj() or negated view (conjugate or
    negative bit set), whose values exist only as torch reads them."""
    for bit, lazy, resolve in ((t.is_conj(), "conjugate", "resolve_conj"),
                               (t.is_neg(), "negative", "resolve_neg")):
        if bit:
            raise ValueError(f"{name} is a lazy view with its {lazy} bit set: its memory does "
                             f"not hold its values, and lrcore reads and updates memory in "
                             f"place; pass a tensor without it ({resolve}() makes one)")


def _check_param(t, name):
    if t.is_sparse:
        raise TypeError(f"{name} is a sparse tensor; lrcore updates dense CPU tensors")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; lrcore.torch runs on CPU tensors")
    if t.dtype == torch.complex32:
        raise TypeError(f"{name} has dtype torch.complex32: complex half-precision params are "
                        f"not supported; lrcore.torch takes {_DTYPE_NAMES}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; lrcore.torch takes {_DTYPE_NAMES}")
    if not _is_dense(t):
        raise ValueError(f"{name} is not dense (shape {tuple(t.shape)}, strides {t.stride()}: "
                         f"its elements overlap or leave gaps); lrcore updates in place and "
                         f"never copies")
    _check_resolved(t, name)


def _check_like(t, p, name, dtype=None, why=None, what="the param"):
    """t (a grad or state buffer) must be laid out as its param p (`what`: p's description
    in messages): then the element-wise update runs on the same flat memory order for all of
    them. Its dtype must be p's, or `dtype` (a compact state format's; `why` says so)."""
    if t.is_sparse:
        raise TypeError(f"{name} is a sparse tensor; lrcore updates dense CPU tensors")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; lrcore.torch runs on CPU tensors")
    _check_resolved(t, name)
    if dtype is None and t.dtype != p.dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, the param {p.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}; {why}")
    if t.shape != p.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, {what} {tuple(p.shape)}")
    # strides of size-1 dimensions do not change the layout
    if t.numel() and any(st != sp for n, st, sp in zip(p.shape, t.stride(), p.stride())
                         if n != 1):
        raise ValueError(f"{name} has strides {t.stride()} where the param has {p.stride()}; "
                         f"lrcore updates a param, its grad and state in place on one shared "
                         f"layout and never copies")


# the torch dtype of each buffer format (lrcore's BUFFER_FORMATS; "8bit": the codes)
_TORCH_FORMATS = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                  "bfloat16": torch.bfloat16, "8bit": torch.uint8}


# the format of the array the update runs on for a param of each dtype (complex: its real view)
_OWN_FORMAT = {torch.float32: "float32", torch.complex64: "float32", torch.float64: "float64",
               torch.complex128: "float64", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _real(p):
    """What the update runs on for p: p, or a complex p's real view (shape + (2,))."""
    p = p.detach()
    return torch.view_as_real(p) if p.is_complex() else p


def _check_state(st, name, p, fmt, blocks, group, where):
    """A param's existing state buffer st[name] must be what the group's options store: a
    buffer of the param's own format laid out as the param (torch.optim's state), else a
    tensor of `fmt`'s dtype laid out as the param's real view; an 8-bit one needs its
    `name + "_absmax"`, 1-D contiguous float32 of shape `blocks` (one entry per 256-element
    block), and other buffers have none."""
    label, absmax = f"{where} {name!r}", name + "_absmax"
    if fmt == _OWN_FORMAT[p.dtype]:
        _check_like(st[name], p, label)
    else:
        real = _real(p)
        dtype = _TORCH_FORMATS[fmt]
        why = f"state_format={_compact(group, 'state_format')!r} stores it as {dtype}"
        if fmt == "float32" and _compact(group, "state_format") == "8bit":
            why += (f" (the param has {p.numel()} elements, fewer than min_8bit_size="
                    f"{_compact(group, 'min_8bit_size')})")
        _check_like(st[name], real, label, dtype=dtype, why=why,
                    what="the param's real view" if p.is_complex() else "the param")
    a = st.get(absmax)
    if fmt != "8bit":
        if a is not None:
            raise ValueError(f"{where} {absmax!r} holds the block maxima of 8-bit codes, but "
                             f"these options store {name!r} as {fmt}; restore the state with "
                             f"load_state_dict()")
        return
    label = f"{where} {absmax!r}"
    if a is None:
        raise ValueError(f"{label} is missing: the 8-bit codes of {name!r} cannot be decoded "
                         f"without their block maxima; restore the state with load_state_dict()")
    if a.is_sparse:
        raise TypeError(f"{label} is a sparse tensor; lrcore updates dense CPU tensors")
    if a.device.type != "cpu":
        raise ValueError(f"{label} is on {a.device}; lrcore.torch runs on CPU tensors")
    if a.dtype != torch.float32:
        raise TypeError(f"{label} has dtype {a.dtype}; state_format='8bit' stores one "
                        f"torch.float32 absmax per 256-element block")
    if tuple(a.shape) != blocks:
        raise ValueError(f"{label} has shape {tuple(a.shape)}, expected {blocks}: one absmax "
                         f"per 256-element block of the {_real(p).numel()} elements")
    if not a.is_contiguous():
        raise ValueError(f"{label} has strides {a.stride()}, expected a contiguous tensor; "
                         f"lrcore updates it in place and never copies")
    _check_resolved(a, label)


def _state_tensor(p, fmt, values):
    """A new compact state tensor of format `fmt` laid out as p's real view (its strides,
    so element e of the flat memory order is element e of lrcore's flat array), holding the
    numpy array `values` (lrcore's _new_buffers; bfloat16 copied as its bit patterns)."""
    t = torch.empty_like(_real(p), dtype=_TORCH_FORMATS[fmt], memory_format=torch.preserve_format)
    np.copyto(_flat(t).view(np.uint8), np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    return t


def _flat(t):
    """A dense tensor's memory as a 1-D numpy array, no copy (complex: its real view;
    bfloat16, which numpy lacks: its bit patterns as uint16 tagged for lrcore as bfloat16)."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    flat = t.as_strided((t.numel(),), (1,), t.storage_offset())
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(_validate.BFLOAT16_BITS)
    return flat.numpy()


_PLAIN = (torch.float32, torch.float64, torch.float16)

# the compiled view of memory at an address (None without the extension): a grad laid out as
# its param, checked, is viewed through it as the param's flat view's dtype and size
_array_at = getattr(_backend._kernels, "_array_at", None)


def _grad_view(g):
    """_flat(g) for reading, sooner for a contiguous float16 / float32 / float64 tensor (the
    common grad): its numpy view, reshaped to 1-D (a view, the memory being contiguous)."""
    if g.dtype in _PLAIN and g.is_contiguous():
        return (g.detach() if g.requires_grad else g).numpy().reshape(-1)
    return _flat(g)


# The per-step check reads the tensors it keeps through C calls mapped over lists, with no
# Python frame per tensor (it runs at every step, for every tensor). A kept tensor was checked
# dense and on the CPU; its layout cannot change in place (torch refuses `.data =` of a sparse
# or meta tensor on a dense one), and a real tensor has no conjugate bit to set.
_address = torch.Tensor.data_ptr
_form = operator.attrgetter("dtype", "shape", "is_cpu")
_strides = torch.Tensor.stride
_is_neg = torch.Tensor.is_neg
_is_conj = torch.Tensor.is_conj
_layout = operator.attrgetter("layout")


_ATTRIBUTES = (_form, _strides, _is_neg)


def _layouts(tensors):
    """What a numpy view of each of these strided tensors depends on beside its address and
    (complex) its conjugate bit, a list per attribute: [(dtype, shape, is_cpu)], [strides],
    [negative bit]."""
    return [list(map(attribute, tensors)) for attribute in _ATTRIBUTES]


def _laid_out(tensors, layouts):
    """Whether the tensors' _layouts are `layouts`; stops at the first attribute that differs."""
    return all(list(map(attribute, tensors)) == layout
               for attribute, layout in zip(_ATTRIBUTES, layouts))


_NO_STATE = {}     # what valid() reads for a param without state (never written)


class _GroupViews:
    """A param group's params and state buffers as checked numpy views, with the layout and
    signature the update binds them with: what _prepare sets up at a step, kept for the next.

    valid() says whether a step may use them: the same group dict and options (lrcore class,
    buffer names, state_format, min_8bit_size, param_rounding), the same params with grads
    in the same order, the same tensors in their state dicts, each with the address, dtype,
    shape, strides, device and conjugate / negative bits it had. The views keep the tensors'
    memory alive, so an unchanged address is the same memory. Anything else (load_state_dict,
    a state entry replaced, `p.data = ...`, a param without a grad) makes the step check
    everything anew.
    """

    def __init__(self, group, options, members, params, buffers, layout, tensors):
        self.group, self.options = group, options
        self.members = [p for _, p in members]
        self.params, self.buffers, self.layout = params, buffers, layout
        self.signature = _validate.signature_of((a.dtype, a.shape) for a in params)
        # per param: (state key, tensor or None) of the state entries checked
        self.tensors = tensors
        # valid() compares, per param, its state dict's entries at these keys with these
        # tensors, and every tensor viewed (params, then state tensors) with what it was
        self.keys = [tuple(key for key, _ in entries) for entries in tensors]
        self.values = [tuple(t for _, t in entries) for entries in tensors]
        self.watched = self.members + [t for entries in tensors for _, t in entries
                                       if t is not None]
        self.addresses = list(map(_address, self.watched))
        self.layouts = _layouts(self.watched)
        self.param_layouts = _layouts(self.members)     # what the grads must have
        self.complex = [t for t in self.watched if t.is_complex()]
        self.complex_params = [k for k, p in enumerate(self.members) if p.is_complex()]
        self.steps = _step_views([t for entries in tensors for key, t in entries
                                  if key == "step"])
        # the per-array counts the lrcore state is bound with (filled at every step), and
        # the state bound to these views (_prepare)
        self.array_steps = np.zeros(len(members), dtype=np.int64)
        self.bound = None

    def valid(self, group, options, members, state):
        if group is not self.group or options != self.options \
                or len(members) != len(self.members):
            return False
        for (_, p), q, keys, values in zip(members, self.members, self.keys, self.values):
            if p is not q:
                return False
            st = state.get(p, _NO_STATE)
            if not all(map(operator.is_, map(st.get, keys), values)):
                return False
        watched = self.watched
        try:
            return (list(map(_address, watched)) == self.addresses
                    and _laid_out(watched, self.layouts)
                    and not any(map(_is_conj, self.complex)))
        except RuntimeError:    # a tensor torch cannot give an address of: check it anew
            return False

    def grads(self, members, index):
        """The members' grads as numpy arrays, each checked to be laid out as its param."""
        grads = [p.grad for _, p in members]
        if _array_at is not None and all(map(torch.strided.__eq__, map(_layout, grads))) \
                and _laid_out(grads, self.param_layouts) \
                and not any(_is_conj(grads[k]) for k in self.complex_params):
            # each laid out as its param (dtype, shape, strides, on the CPU, neither conj nor
            # neg bit): its memory is that of the param's flat view
            return list(map(_array_at, map(_address, grads), self.params, grads))
        # the errors of a full check; size-1 dimensions may have other strides
        out = []
        for (i, p), g in zip(members, grads):
            _check_like(g, p, f"param_groups[{index}]['params'][{i}].grad")
            out.append(_grad_view(g))
        return out


def _step_views(steps):
    """numpy views of the state["step"] tensors, which the update increments through them;
    None if there are none or one is not a 0-d float32 / float64 CPU tensor numpy can view
    (the update then increments the tensors)."""
    if not steps or any(t.dim() != 0 or t.dtype not in (torch.float32, torch.float64)
                        or t.layout is not torch.strided or not t.is_cpu or t.is_neg()
                        or t.requires_grad for t in steps):
        return None
    return [t.numpy() for t in steps]


def _new_buffer(p, start):
    """A state buffer laid out as p (torch's preserve_format), every real component = start
    (a complex Adagrad sum starts at start + start·i, as torch's)."""
    buf = torch.empty_like(p, memory_format=torch.preserve_format)
    (torch.view_as_real(buf) if buf.is_complex() else buf).fill_(start)
    return buf


_CHECK_NAMES = re.compile(r"state buffer (\w+)\[(\d+)\]|grads\[(\d+)\]|params\[(\d+)\]")


def _torch_names(message, index, members):
    """lrcore's check_step message with its array names (params[k], grads[k], state buffer
    name[k], k counting the params that have a grad) as the group's tensors."""
    def rename(m):
        param = f"param_groups[{index}]['params'][{members[int(m[2] or m[3] or m[4])][0]}]"
        if m[1]:
            return f"{param}'s state {m[1]!r}"
        return f"{param}.grad" if m[3] else param
    return _CHECK_NAMES.sub(rename, message)


# the compact-state keywords with their defaults: a param group without them (one loaded from
# a torch.optim state_dict or an older lrcore.torch) has these values; the keys are not added
# to it, so it stays as torch.optim loads it
_COMPACT_DEFAULTS = dict(state_format=None, param_rounding="nearest", seed=0, min_8bit_size=4096)


def _compact(group, key):
    return group.get(key, _COMPACT_DEFAULTS[key])


# the lrcore constructor keywords of each optimizer but lr, read from a param group (and the
# above)
_KEYS = {
    "SGD": ("momentum", "dampening", "nesterov", "weight_decay", "maximize"),
    "Adagrad": ("lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    "RMSprop": ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    "Adam": ("betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "AdamW": ("betas", "eps", "weight_decay", "amsgrad", "maximize"),
}

_COMMON_DEFAULTS = dict(foreach=None, maximize=False, differentiable=False)


class SGD(_LrcoreOptimizer):
    """torch.optim.SGD on lrcore's kernels."""

    _lrcore_class = optimizers.SGD
    _has_step = False
    _group_defaults = dict(_COMMON_DEFAULTS, nesterov=False, fused=False)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, max_grad_norm=None, state_format=None, param_rounding="nearest",
                 seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize),
                         foreach=foreach, fused=fused, differentiable=differentiable,
                         max_grad_norm=max_grad_norm, state_format=state_format,
                         param_rounding=param_rounding, seed=seed, min_8bit_size=min_8bit_size)

    def _array_steps(self, views):
        # torch's first momentum step is the one that finds no buffer (it copies the gradient)
        return [0 if self.state.get(p, {}).get("momentum_buffer") is None else 1
                for p in views.members]


class Adagrad(_LrcoreOptimizer):
    """torch.optim.Adagrad on lrcore's kernels."""

    _lrcore_class = optimizers.Adagrad
    _group_defaults = dict(_COMMON_DEFAULTS, fused=None)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None, max_grad_norm=None, state_format=None,
                 param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize),
                         foreach=foreach, fused=fused, differentiable=differentiable,
                         max_grad_norm=max_grad_norm, state_format=state_format,
                         param_rounding=param_rounding, seed=seed, min_8bit_size=min_8bit_size)


class RMSprop(_LrcoreOptimizer):
    """torch.optim.RMSprop on lrcore's kernels."""

    _lrcore_class = optimizers.RMSprop
    _group_defaults = dict(_COMMON_DEFAULTS, momentum=0, centered=False, capturable=False)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, max_grad_norm=None, state_format=None,
                 param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         foreach=foreach, capturable=capturable, differentiable=differentiable,
                         max_grad_norm=max_grad_norm, state_format=state_format,
                         param_rounding=param_rounding, seed=seed, min_8bit_size=min_8bit_size)


class Adam(_LrcoreOptimizer):
    """torch.optim.Adam on lrcore's kernels; decoupled_weight_decay=True makes it AdamW (a
    group's "decoupled_weight_decay" is read at every step, as torch does)."""

    _lrcore_class = optimizers.Adam
    _group_defaults = dict(_COMMON_DEFAULTS, amsgrad=False, capturable=False,
                           decoupled_weight_decay=False, fused=None)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 max_grad_norm=None, state_format=None, param_rounding="nearest", seed=0,
                 min_8bit_size=4096):
        # torch refuses these combinations (its foreach path cannot read tensors); so do we
        if foreach and not capturable:
            if torch.is_tensor(lr):
                raise ValueError("lr as a Tensor is not supported for capturable=False and "
                                 "foreach=True")
            for i, b in enumerate(betas[:2] if isinstance(betas, (tuple, list)) else ()):
                if torch.is_tensor(b):
                    raise ValueError(f"betas[{i}] as a Tensor is not supported for "
                                     f"capturable=False and foreach=True")
        if isinstance(betas, (tuple, list)):    # as torch: 1-element tensors kept 0-d
            betas = tuple(b.squeeze() if torch.is_tensor(b) and b.dim() else b for b in betas)
        decoupled_weight_decay = _validate.flag(decoupled_weight_decay,
                                                "decoupled_weight_decay")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay),
                         foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, max_grad_norm=max_grad_norm,
                         state_format=state_format, param_rounding=param_rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    def _lrcore_class_of(self, group):
        return optimizers.AdamW if group["decoupled_weight_decay"] else optimizers.Adam


class AdamW(Adam):
    """torch.optim.AdamW on lrcore's kernels."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, max_grad_norm=None, state_format=None,
                 param_rounding="nearest", seed=0, min_8bit_size=4096):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, max_grad_norm=max_grad_norm,
                         state_format=state_format, param_rounding=param_rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    def __setstate__(self, state):
        # as torch.optim.AdamW: whatever was saved, loading into AdamW means decoupled decay
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
