"""ReduceLROnPlateau: lower an optimizer state's rate when a metric stops improving.

    state = lrcore.Adam(lr=1e-3)
    plateau = lrcore.ReduceLROnPlateau(state, factor=0.5, patience=3)
    for epoch in range(epochs):
        ...                                 # lrcore.step(params, grads, state) per batch
        plateau.step(validation_loss)       # after each epoch

The decisions are torch.optim.lr_scheduler.ReduceLROnPlateau's, made on the same float
operations: a metric is better than the best so far when it beats it by the threshold
(relative or absolute); after more than `patience` epochs without a better one the rate is
reduced, then `cooldown` epochs pass before bad epochs count again.

What a reduction lowers:
- a number lr: state.lr becomes max(lr·factor, min_lr), as torch sets a param group's lr;
- an lrcore schedule or a callable lr: its value v at each step is used as
  max(v·lr_scale, min_lr), lr_scale being factor**(reductions applied) (the factor is
  multiplied in once per reduction). The compiled step applies this in C (StepCore.rate),
  without a Python call per step.
Either way a reduction is applied only when it lowers the rate of the next update (update
number state.step_count) by more than eps, torch's rule for a param group's lr.

The controller's settings and counters, and lr_scale, are part of the state's state_dict()
(key "plateau") and of lrcore.save / lrcore.load, so a resumed run decides the same; after a
load, state.plateau is the restored controller.
"""
import math
import numbers

from lrcore import _validate, optimizers

MODES = ("min", "max")
THRESHOLD_MODES = ("rel", "abs")
_COUNT_MAX = _validate.INT64_MAX
# state_dict() keys: the settings (the constructor's arguments), then the counters
_SETTINGS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr",
             "eps")
_COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "lr_scale")


def _count(value, name):
    """value as an int in [0, 2**63 - 1] (TypeError / ValueError naming `name`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _COUNT_MAX:
        raise ValueError(f"{name} must be an int in [0, 2**63 - 1], got "
                         f"{value if abs(value) < 2 ** 64 else 'an int outside int64'}")
    return int(value)


def _choice(value, name, choices):
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _settings(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps,
              named=lambda key: key):
    """The constructor's arguments, checked, as a dict; messages name each as named(key)."""
    return {
        "mode": _choice(mode, named("mode"), MODES),
        # torch requires factor < 1; a negative one would make a negative rate
        "factor": _validate.real(factor, named("factor"), high=1.0, high_open=True),
        "patience": _count(patience, named("patience")),
        "threshold": _validate.real(threshold, named("threshold")),
        "threshold_mode": _choice(threshold_mode, named("threshold_mode"), THRESHOLD_MODES),
        "cooldown": _count(cooldown, named("cooldown")),
        "min_lr": _validate.real(min_lr, named("min_lr")),
        "eps": _validate.real(eps, named("eps")),
    }


class ReduceLROnPlateau:
    """Lowers the rate of the lrcore optimizer state `state` when `.step(metric)` sees the
    metric stop improving: torch.optim.lr_scheduler.ReduceLROnPlateau's decisions, with the
    reduction applied to a number lr directly and to a schedule as a factor (module
    docstring). Attaching it to `state` replaces the controller attached before, if any
    (which then refuses to step); the factor already accumulated is kept, as a torch
    optimizer keeps its reduced lr."""

    def __init__(self, state, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(state, optimizers.Optimizer):
            raise TypeError(f"state must be an lrcore optimizer state such as lrcore.SGD(...), "
                            f"got {type(state).__name__}")
        settings = _settings(mode, factor, patience, threshold, threshold_mode, cooldown,
                             min_lr, eps)
        self._state = state
        self._set(settings, best=self._worst(settings["mode"]), num_bad_epochs=0,
                  cooldown_counter=0, last_epoch=0)
        state._core.locked(self._attach, min_lr)

    def _attach(self, min_lr):
        self._state._core.lr_floor = min_lr
        self._state._plateau = self

    def _set(self, settings, best, num_bad_epochs, cooldown_counter, last_epoch):
        self._settings = settings
        self._best, self._num_bad_epochs = best, num_bad_epochs
        self._cooldown_counter, self._last_epoch = cooldown_counter, last_epoch

    @staticmethod
    def _worst(mode):
        return math.inf if mode == "min" else -math.inf

    # -- the settings (read-only; load_state_dict sets them) -----------------------------

    state = property(lambda self: self._state, doc="The optimizer state whose rate it lowers.")
    mode = property(lambda self: self._settings["mode"],
                    doc="'min': lower the rate when the metric stops decreasing; 'max': "
                        "when it stops increasing.")
    factor = property(lambda self: self._settings["factor"],
                      doc="What one reduction multiplies the rate by.")
    patience = property(lambda self: self._settings["patience"],
                        doc="Epochs without improvement tolerated before a reduction.")
    threshold = property(lambda self: self._settings["threshold"],
                         doc="The margin by which a metric must beat the best to count.")
    threshold_mode = property(lambda self: self._settings["threshold_mode"],
                              doc="'rel': the margin is relative to the best; 'abs': absolute.")
    cooldown = property(lambda self: self._settings["cooldown"],
                        doc="Epochs after a reduction during which bad epochs are not counted.")
    min_lr = property(lambda self: self._settings["min_lr"], doc="The rate's floor.")
    eps = property(lambda self: self._settings["eps"],
                   doc="A reduction lowering the rate by eps or less is not applied.")

    # -- the counters ----------------------------------------------------------------

    best = property(lambda self: self._best,
                    doc="The best metric so far (inf for mode='min', -inf for 'max' before the "
                        "first step).")
    num_bad_epochs = property(lambda self: self._num_bad_epochs,
                              doc="Epochs since the best metric, as torch counts them.")
    cooldown_counter = property(lambda self: self._cooldown_counter,
                                doc="Epochs of cooldown left.")
    last_epoch = property(lambda self: self._last_epoch,
                          doc="How many times step() has been called.")

    @property
    def in_cooldown(self):
        """Whether the next step() falls in the cooldown after a reduction."""
        return self._cooldown_counter > 0

    @property
    def lr_scale(self):
        """What a schedule's or callable's value is multiplied by: factor**(reductions
        applied while lr was one), 1.0 before any."""
        return self._state._core.lr_scale

    # -- the decision ----------------------------------------------------------------

    def _is_better(self, a, best):
        """Whether metric `a` beats `best` by the threshold: torch's is_better."""
        s = self._settings
        if s["mode"] == "min" and s["threshold_mode"] == "rel":
            return a < best * (1.0 - s["threshold"])
        if s["mode"] == "min":
            return a < best - s["threshold"]
        if s["threshold_mode"] == "rel":
            return a > best * (s["threshold"] + 1.0)
        return a > best + s["threshold"]

    def step(self, metric):
        """Count one epoch with `metric` (a real number; NaN counts as not better) and lower
        the rate when the metric has not improved for more than `patience` epochs outside a
        cooldown. Returns whether the rate was lowered."""
        if isinstance(metric, (str, bytes, bool)) or not hasattr(type(metric), "__float__"):
            raise TypeError(f"metric must be a real number, got {type(metric).__name__}")
        try:
            current = float(metric)
        except (TypeError, ValueError) as exc:     # e.g. an array of several elements
            raise TypeError(f"metric must be a real number, got {type(metric).__name__} "
                            f"({exc})") from None
        return self._state._core.locked(self._step_locked, current)

    def _step_locked(self, current):
        if self._state._plateau is not self:
            raise RuntimeError("this ReduceLROnPlateau no longer controls its state: another "
                               "was attached, or load_state_dict replaced it (state.plateau is "
                               "the one in use)")
        # torch's step, in its order
        last_epoch = self._last_epoch + 1
        if self._is_better(current, self._best):
            best, bad = current, 0
        else:
            best, bad = self._best, self._num_bad_epochs + 1
        cooldown_counter = self._cooldown_counter
        if cooldown_counter > 0:
            cooldown_counter -= 1
            bad = 0
        reduced = False
        if bad > self._settings["patience"]:
            reduced = self._reduce()
            cooldown_counter = self._settings["cooldown"]
            bad = 0
        self._best, self._num_bad_epochs = best, bad
        self._cooldown_counter, self._last_epoch = cooldown_counter, last_epoch
        return reduced

    def _reduce(self):
        """torch's _reduce_lr for the state's rate: applied when it lowers the next update's
        rate by more than eps. Whether it was applied."""
        state, s = self._state, self._settings
        factor, min_lr = s["factor"], s["min_lr"]
        if not callable(state.lr):
            old = float(state.lr)
            new = max(old * factor, min_lr)
            if old - new > s["eps"]:
                state.lr = new
                return True
            return False
        core = state._core
        value = state._schedule_at(core.step_count)
        scale = core.lr_scale
        old = state._scaled(value)
        core.lr_scale = scale * factor
        new = state._scaled(value)
        if old - new > s["eps"]:
            return True
        core.lr_scale = scale
        return False

    # -- state_dict ------------------------------------------------------------------

    def state_dict(self):
        """{"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
        "min_lr", "eps", "best", "num_bad_epochs", "cooldown_counter", "last_epoch",
        "lr_scale"}: the settings and counters (also under "plateau" in the state's
        state_dict)."""
        return self._state._core.locked(self._snapshot)

    def _snapshot(self):
        return dict(self._settings, best=self._best, num_bad_epochs=self._num_bad_epochs,
                    cooldown_counter=self._cooldown_counter, last_epoch=self._last_epoch,
                    lr_scale=self._state._core.lr_scale)

    def load_state_dict(self, state_dict):
        """Restore a state_dict(): settings, counters and the state's lr_scale. Checked
        before anything changes (ValueError naming the entry)."""
        checked = self._checked_state_dict(state_dict, "state_dict")
        self._state._core.locked(self._load_locked, checked)

    def _load_locked(self, checked):
        if self._state._plateau is not self:
            raise RuntimeError("this ReduceLROnPlateau no longer controls its state: another "
                               "was attached, or load_state_dict replaced it (state.plateau is "
                               "the one in use)")
        core = self._state._core
        core.lr_scale, core.lr_floor = checked["lr_scale"], checked["min_lr"]
        self._load(checked)

    def _load(self, checked):
        self._set({k: checked[k] for k in _SETTINGS}, checked["best"],
                  checked["num_bad_epochs"], checked["cooldown_counter"], checked["last_epoch"])

    @staticmethod
    def _checked_state_dict(state_dict, name):
        """A state_dict() checked: the same keys with valid values (TypeError for a non-dict,
        ValueError naming `name`[key] otherwise)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name} must be a dict, got {type(state_dict).__name__}")
        missing = [k for k in _SETTINGS + _COUNTERS if k not in state_dict]
        if missing:
            raise ValueError(f"{name} is missing {', '.join(missing)}")
        try:    # a wrong type inside the dict is a malformed dict: ValueError
            out = _settings(*(state_dict[k] for k in _SETTINGS),
                            named=lambda key: f"{name}[{key!r}]")
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        best = state_dict["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real):
            raise ValueError(f"{name}['best'] must be a real number, got {type(best).__name__}")
        out["best"] = float(best)
        for key in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
            try:
                out[key] = _count(state_dict[key], f"{name}[{key!r}]")
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        scale = state_dict["lr_scale"]
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) \
                or not 0.0 <= scale <= 1.0:
            raise ValueError(f"{name}['lr_scale'] must be a number in [0, 1], got {scale!r}")
        out["lr_scale"] = float(scale)
        return out

    @classmethod
    def _restored(cls, state, existing, checked):
        """The controller of `state` after its load_state_dict: `existing` (the one attached
        before, so references to it stay valid) or a new one, holding `checked`. The state's
        core already holds lr_scale and the floor."""
        plateau = existing if existing is not None else cls.__new__(cls)
        plateau._state = state
        plateau._load(checked)
        return plateau

    def __repr__(self):
        s = self._settings
        return (f"ReduceLROnPlateau(mode={s['mode']!r}, factor={s['factor']!r}, "
                f"patience={s['patience']!r}, threshold={s['threshold']!r}, "
                f"threshold_mode={s['threshold_mode']!r}, cooldown={s['cooldown']!r}, "
                f"min_lr={s['min_lr']!r}, eps={s['eps']!r})")
