"""Learning-rate schedules in closed form: ``lr_at(step)`` for any step, no state.

Why closed forms: the schedule monitor (``schedule_monitor.py``) must say what the LR *should*
be at step 1_000_000 without replaying a million scheduler calls, the evaluator plots policies
that were never run, and a closed form cannot accumulate rounding error the way PyTorch's
chainable schedulers do (they multiply the previous LR by a ratio at every step).

Conventions
-----------
* ``step`` counts optimizer steps from 0; ``lr_at(s)`` is the LR used by optimizer step ``s``.
  That is PyTorch's LR after ``s`` calls of ``scheduler.step()`` (``last_epoch == s``) and
  Hugging Face's ``base_lr * lr_lambda(s)``.
* A schedule is declared as a dict (the run meta's ``"lr_schedule"``), e.g.
  ``{"name": "cosine", "lr": 3e-4, "total_steps": 10000}``; :func:`build_schedule` validates it
  and :meth:`Schedule.to_spec` gives it back.
* ``lr_at`` is total: at every step 0 .. 2^63-1 it returns a finite float in [0, FLOAT_MAX]. A
  closed form whose exact value leaves the float range (``exponential`` with gamma 2 at step
  1024, ``triangular2``'s halving after 2^10 cycles) saturates instead of raising; a declaration
  that cannot be evaluated (a zero divisor, an integer past 2^63-1) is refused by
  :func:`build_schedule`, so the API answers it with a 422 rather than failing every later batch.
* ``"interval": "epoch"`` with ``"steps_per_epoch": N`` declares a schedule whose unit is the
  epoch (PyTorch's ``StepLR(step_size=30)`` stepped once per epoch): ``lr_at(s)`` is then the
  inner schedule at ``s // N``.

Names and parameters (defaults in brackets; PyTorch / Hugging Face equivalent):

=====================  =======================================================  ==========================
name                   parameters                                               equivalent
=====================  =======================================================  ==========================
constant               lr                                                       ConstantLR(factor=1)
step                   lr, step_size, gamma [0.1]                               StepLR
multistep              lr, milestones, gamma [0.1]                              MultiStepLR
exponential            lr, gamma                                                ExponentialLR
polynomial             lr, total_steps, power [1], end_lr [0]                   PolynomialLR (end_lr=0)
inverse_time           lr, decay_steps [1], decay_rate [1], power [1],          Keras InverseTimeDecay
                       staircase [False]
cosine                 lr, total_steps, min_lr [0]                              CosineAnnealingLR
cosine_restarts        lr, period, period_mult [1], min_lr [0]                  CosineAnnealingWarmRestarts
warmup_linear          lr, warmup_steps | warmup_ratio, total_steps, min_lr [0] get_linear_schedule_with_warmup
warmup_cosine          lr, warmup_steps | warmup_ratio, total_steps,            get_cosine_schedule_with_warmup
                       num_cycles [0.5], min_lr [0]                             (.._with_min_lr_.. if min_lr)
warmup_constant        lr, warmup_steps | warmup_ratio [, total_steps]          get_constant_schedule_with_warmup
warmup_polynomial      lr, warmup_steps | warmup_ratio, total_steps,            get_polynomial_decay_schedule_with_warmup
                       power [1], end_lr [1e-7]
warmup_inverse_sqrt    lr, warmup_steps, timescale [=warmup or 1e4]             get_inverse_sqrt_schedule
cyclic                 base_lr, max_lr, step_size_up, step_size_down [=up],     CyclicLR
                       mode [triangular|triangular2|exp_range], gamma [1]
one_cycle              max_lr, total_steps, pct_start [0.3], anneal_strategy    OneCycleLR
                       [cos|linear], div_factor [25], final_div_factor [1e4],
                       three_phase [False]
=====================  =======================================================  ==========================

Examples
--------
>>> s = build_schedule({"name": "step", "lr": 0.1, "step_size": 30})
>>> [round(s.lr_at(k), 6) for k in (0, 29, 30, 60)]
[0.1, 0.1, 0.01, 0.001]
>>> w = build_schedule({"name": "warmup_cosine", "lr": 2e-5, "warmup_ratio": 0.03, "total_steps": 1000})
>>> w.warmup_steps, w.lr_at(0), w.lr_at(30) == w.peak_lr
(30, 0.0, True)
>>> build_schedule({"name": "cosine", "lr": 1e-3})
Traceback (most recent call last):
...
ValueError: lr_schedule 'cosine': missing parameter 'total_steps' (needs lr, total_steps; optional min_lr)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["Schedule", "build_schedule", "SCHEDULES", "PerEpoch", "FLOAT_MAX", "MAX_STEP"]

FLOAT_MAX = sys.float_info.max
#: the largest step a record carries (a signed 64-bit integer); integer parameters are bounded by it
MAX_STEP = 2**63 - 1


def _pow(base: float, exponent: float) -> float:
    """``base ** exponent`` for base, exponent >= 0, saturating at FLOAT_MAX where Python's float
    power raises OverflowError (gamma 2 at step 1024). Saturating rather than returning inf keeps
    ``0 * _pow(...)`` at 0, never NaN."""
    try:
        v = base**exponent
    except OverflowError:
        return FLOAT_MAX
    return FLOAT_MAX if v > FLOAT_MAX else v


class Schedule:
    """Base of every schedule: a pure function of the step plus a few descriptive properties."""

    name: ClassVar[str] = ""
    #: parameters that must be given (the others have defaults)
    required: ClassVar[tuple[str, ...]] = ()

    def lr_at(self, step: int) -> float:
        """The LR at ``step`` (any int >= 0): a finite float in [0, FLOAT_MAX]. A closed form whose
        exact value leaves the float range (``exponential`` with gamma > 1 at step 10**6)
        saturates at FLOAT_MAX instead of raising; a tiny negative from rounding is 0."""
        v = self._lr(step)
        if v != v:  # NaN: an LR of 0 times a factor that overflowed (the exact value is 0)
            return 0.0
        return 0.0 if v < 0.0 else (FLOAT_MAX if v > FLOAT_MAX else v)

    def _lr(self, step: int) -> float:  # pragma: no cover - abstract
        """The closed form itself (may leave [0, FLOAT_MAX] in extreme cases, never raises)."""
        raise NotImplementedError

    def lrs(self, steps) -> list[float]:
        """``lr_at`` over an iterable of steps (a convenience for plots and tests)."""
        return [self.lr_at(int(s)) for s in steps]

    @property
    def peak_lr(self) -> float:
        """The largest LR the schedule ever uses."""
        return float(getattr(self, "lr"))

    @property
    def warmup_steps(self) -> int:
        """Steps of warmup before the peak (0 when the schedule has none)."""
        return 0

    @property
    def total_steps_hint(self) -> int | None:
        """Length of the schedule when it has one (None for open-ended schedules)."""
        return getattr(self, "total_steps", None)

    @property
    def unit_steps(self) -> int:
        """Optimizer steps per schedule step (1, or steps_per_epoch for per-epoch schedules)."""
        return 1

    def to_spec(self) -> dict[str, Any]:
        """The declaration this schedule was built from (normalised), JSON-safe."""
        out: dict[str, Any] = {"name": self.name}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.to_spec().items() if k != "name")
        return f"{self.name}({params})"


# --- the schedules --------------------------------------------------------------------------


@dataclass(repr=False)
class Constant(Schedule):
    name: ClassVar[str] = "constant"
    required: ClassVar[tuple[str, ...]] = ("lr",)
    lr: float

    def _lr(self, step: int) -> float:
        return self.lr


@dataclass(repr=False)
class StepDecay(Schedule):
    """``lr * gamma ** (step // step_size)`` (PyTorch StepLR)."""

    name: ClassVar[str] = "step"
    required: ClassVar[tuple[str, ...]] = ("lr", "step_size")
    lr: float
    step_size: int
    gamma: float = 0.1

    def _lr(self, step: int) -> float:
        return self.lr * _pow(self.gamma, step // self.step_size)


@dataclass(repr=False)
class MultiStep(Schedule):
    """``lr * gamma ** (number of milestones <= step)`` (PyTorch MultiStepLR)."""

    name: ClassVar[str] = "multistep"
    required: ClassVar[tuple[str, ...]] = ("lr", "milestones")
    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def _lr(self, step: int) -> float:
        # bisect keeps it O(log m); torch counts repeated milestones twice, so do we
        import bisect

        return self.lr * _pow(self.gamma, bisect.bisect_right(self.milestones, step))


@dataclass(repr=False)
class Exponential(Schedule):
    """``lr * gamma ** step`` (PyTorch ExponentialLR)."""

    name: ClassVar[str] = "exponential"
    required: ClassVar[tuple[str, ...]] = ("lr", "gamma")
    lr: float
    gamma: float

    def _lr(self, step: int) -> float:
        return self.lr * _pow(self.gamma, step)


@dataclass(repr=False)
class Polynomial(Schedule):
    """``end_lr + (lr - end_lr) * (1 - min(step, T) / T) ** power`` (PyTorch PolynomialLR when
    end_lr = 0; Hugging Face's polynomial decay after its warmup)."""

    name: ClassVar[str] = "polynomial"
    required: ClassVar[tuple[str, ...]] = ("lr", "total_steps")
    lr: float
    total_steps: int
    power: float = 1.0
    end_lr: float = 0.0

    def _lr(self, step: int) -> float:
        frac = (1.0 - min(self.total_steps, step) / self.total_steps) ** self.power
        return self.end_lr + (self.lr - self.end_lr) * frac if self.end_lr else self.lr * frac


@dataclass(repr=False)
class InverseTime(Schedule):
    """``lr / (1 + decay_rate * t / decay_steps) ** power`` with ``t = step`` (or
    ``floor(step / decay_steps) * decay_steps`` when staircase). power 1 is Keras'
    InverseTimeDecay; power 0.5 the classic 1/sqrt(t) decay."""

    name: ClassVar[str] = "inverse_time"
    required: ClassVar[tuple[str, ...]] = ("lr",)
    lr: float
    decay_steps: int = 1
    decay_rate: float = 1.0
    power: float = 1.0
    staircase: bool = False

    def _lr(self, step: int) -> float:
        t = step / self.decay_steps
        if self.staircase:
            t = math.floor(t)
        return self.lr / _pow(1.0 + self.decay_rate * t, self.power)


@dataclass(repr=False)
class Cosine(Schedule):
    """``min_lr + (lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2`` (PyTorch
    CosineAnnealingLR's closed form; like torch it goes back up after total_steps)."""

    name: ClassVar[str] = "cosine"
    required: ClassVar[tuple[str, ...]] = ("lr", "total_steps")
    lr: float
    total_steps: int
    min_lr: float = 0.0

    def _lr(self, step: int) -> float:
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * step / self.total_steps)) / 2


@dataclass(repr=False)
class CosineRestarts(Schedule):
    """SGDR: cosine from lr to min_lr over ``period`` steps, then restart; each period
    ``period_mult`` times longer (PyTorch CosineAnnealingWarmRestarts)."""

    name: ClassVar[str] = "cosine_restarts"
    required: ClassVar[tuple[str, ...]] = ("lr", "period")
    lr: float
    period: int
    period_mult: int = 1
    min_lr: float = 0.0

    def position(self, step: int) -> tuple[int, int]:
        """(steps since the last restart, length of the current period)."""
        if self.period_mult == 1:
            return step % self.period, self.period
        t_i, start = self.period, 0
        while start + t_i <= step:  # O(log step) periods: exact integer arithmetic
            start += t_i
            t_i *= self.period_mult
        return step - start, t_i

    def _lr(self, step: int) -> float:
        t_cur, t_i = self.position(step)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


@dataclass(repr=False)
class _Warmup(Schedule):
    """Linear warmup from 0 (or start_factor * lr) to ``lr`` over ``warmup_steps`` (HF: ``lr*s/w``), then
    the LR :meth:`_after` gives for the progress in [0, 1]."""

    required: ClassVar[tuple[str, ...]] = ("lr", "total_steps")
    lr: float
    total_steps: int
    warmup_steps: int | None = None  # type: ignore[assignment]
    warmup_ratio: float | None = None
    min_lr: float = 0.0
    #: warmup starts at start_factor * lr: 0 is Hugging Face's convention, torch's LinearLR
    #: (used for warmup in SequentialLR recipes) defaults to 1/3
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps is None:
            # Hugging Face's TrainingArguments: ceil(warmup_ratio * max_steps)
            self.warmup_steps = int(math.ceil((self.warmup_ratio or 0.0) * (self.total_steps or 0)))
            self._from_ratio = True
        else:
            self._from_ratio = False

    def _after(self, progress: float) -> float:  # pragma: no cover - abstract
        """The LR after the warmup, at ``progress`` (0 at the end of the warmup, 1 at total_steps)."""
        raise NotImplementedError

    def _lr(self, step: int) -> float:
        w = self.warmup_steps or 0
        if step < w:
            if self.start_factor:
                # step / w first: (1 - start_factor) * step alone can overflow to -inf
                return self.lr * (self.start_factor + (1.0 - self.start_factor) * (step / w))
            return self.lr * (step / max(1, w))
        progress = (step - w) / max(1, (self.total_steps or 0) - w)
        return self._after(progress)

    def to_spec(self) -> dict[str, Any]:
        out = super().to_spec()
        if self._from_ratio:
            out.pop("warmup_steps")
        else:
            out.pop("warmup_ratio")
        return out


@dataclass(repr=False)
class WarmupLinear(_Warmup):
    """Warmup then linear decay to min_lr at total_steps (HF get_linear_schedule_with_warmup)."""

    name: ClassVar[str] = "warmup_linear"

    def _after(self, progress: float) -> float:
        return self.min_lr + (self.lr - self.min_lr) * max(0.0, 1.0 - progress)


@dataclass(repr=False)
class WarmupCosine(_Warmup):
    """Warmup then half a cosine to min_lr (HF get_cosine_schedule_with_warmup; with min_lr,
    get_cosine_with_min_lr_schedule_with_warmup)."""

    name: ClassVar[str] = "warmup_cosine"
    num_cycles: float = 0.5

    def _after(self, progress: float) -> float:
        angle = math.pi * self.num_cycles * 2.0 * progress
        # an angle past the float range is pi times a float > 2**53, i.e. an even integer of
        # half-turns: its cosine is 1 (math.cos(inf) would raise)
        f = 0.5 * (1.0 + math.cos(angle)) if math.isfinite(angle) else 1.0
        return self.min_lr + (self.lr - self.min_lr) * max(0.0, f)


@dataclass(repr=False)
class WarmupConstant(_Warmup):
    """Warmup then constant (HF get_constant_schedule_with_warmup; torch LinearLR with
    end_factor 1 when start_factor is set); total_steps optional."""

    name: ClassVar[str] = "warmup_constant"
    required: ClassVar[tuple[str, ...]] = ("lr",)
    total_steps: int | None = None  # type: ignore[assignment]

    def _after(self, progress: float) -> float:
        return self.lr


@dataclass(repr=False)
class WarmupPolynomial(_Warmup):
    """Warmup then polynomial decay from lr to end_lr at total_steps, end_lr after (HF
    get_polynomial_decay_schedule_with_warmup, whose lr_end defaults to 1e-7)."""

    name: ClassVar[str] = "warmup_polynomial"
    power: float = 1.0
    end_lr: float = 1e-7

    def _lr(self, step: int) -> float:
        if step > self.total_steps:
            return self.end_lr
        return super()._lr(step)

    def _after(self, progress: float) -> float:
        return (self.lr - self.end_lr) * _pow(1 - progress, self.power) + self.end_lr


@dataclass(repr=False)
class WarmupInverseSqrt(_Warmup):
    """Warmup then ``lr / sqrt((step + timescale - warmup) / timescale)``; timescale defaults
    to warmup_steps or 10_000 (HF get_inverse_sqrt_schedule, the T5/"Attention is all you
    need" decay)."""

    name: ClassVar[str] = "warmup_inverse_sqrt"
    required: ClassVar[tuple[str, ...]] = ("lr",)
    total_steps: int | None = None  # type: ignore[assignment]
    timescale: int | None = None

    def _lr(self, step: int) -> float:
        w = self.warmup_steps or 0
        if step < w:
            return self.lr * (step / max(1, w))
        ts = self.timescale if self.timescale is not None else (w or 10_000)
        return self.lr * (1.0 / math.sqrt((step + ts - w) / ts))


@dataclass(repr=False)
class Cyclic(Schedule):
    """Smith's cyclical LR (PyTorch CyclicLR): a triangle between base_lr and max_lr, whose
    height halves each cycle (triangular2) or decays as gamma**step (exp_range)."""

    name: ClassVar[str] = "cyclic"
    required: ClassVar[tuple[str, ...]] = ("base_lr", "max_lr", "step_size_up")
    base_lr: float
    max_lr: float
    step_size_up: int
    step_size_down: int | None = None
    mode: str = "triangular"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"lr_schedule 'cyclic': mode must be triangular, triangular2 or exp_range, got {self.mode!r}")

    @property
    def peak_lr(self) -> float:
        return self.max_lr

    def _lr(self, step: int) -> float:
        # same arithmetic as torch (float sizes) so the two agree to the last bits
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        total = up + down
        ratio = up / total
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (self.max_lr - self.base_lr) * scale
        if self.mode == "triangular":
            return self.base_lr + height * 1.0
        if self.mode == "triangular2":
            return self.base_lr + height * _pow(0.5, cycle - 1)  # = torch's 1 / 2**(cycle - 1), which overflows
        return self.base_lr + height * _pow(self.gamma, step)


@dataclass(repr=False)
class OneCycle(Schedule):
    """Smith's one-cycle (PyTorch OneCycleLR): from max_lr/div_factor up to max_lr over
    pct_start of the run, then down to initial/final_div_factor; three_phase goes back to the
    initial LR first. Beyond total_steps the LR stays at its final value."""

    name: ClassVar[str] = "one_cycle"
    required: ClassVar[tuple[str, ...]] = ("max_lr", "total_steps")
    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self) -> None:
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"lr_schedule 'one_cycle': anneal_strategy must be cos or linear, got {self.anneal_strategy!r}")
        if not 0.0 <= self.pct_start <= 1.0:
            raise ValueError(f"lr_schedule 'one_cycle': pct_start must be in [0, 1], got {self.pct_start}")
        for k in ("div_factor", "final_div_factor"):
            if getattr(self, k) == 0:
                raise ValueError(f"lr_schedule 'one_cycle': parameter {k!r} must be positive, got 0")
        initial = self.max_lr / self.div_factor
        if not math.isfinite(initial / self.final_div_factor):
            raise ValueError(f"lr_schedule 'one_cycle': max_lr / div_factor / final_div_factor must be a finite LR, "
                             f"got {self.max_lr!r} / {self.div_factor!r} / {self.final_div_factor!r}")

    @property
    def peak_lr(self) -> float:
        return self.max_lr

    @property
    def warmup_steps(self) -> int:
        return int(float(self.pct_start * self.total_steps) - 1)

    def _phases(self) -> list[tuple[float, float, float]]:
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        n = self.total_steps
        if self.three_phase:
            return [
                (float(self.pct_start * n) - 1, initial, self.max_lr),
                (float(2 * self.pct_start * n) - 2, self.max_lr, initial),
                (n - 1, initial, final),
            ]
        return [(float(self.pct_start * n) - 1, initial, self.max_lr), (n - 1, self.max_lr, final)]

    def _lr(self, step: int) -> float:
        step = min(step, self.total_steps - 1)
        start = 0.0
        phases = self._phases()
        for i, (end, lo, hi) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                # a phase of zero length (pct_start * total_steps == 1) is over as soon as it starts
                pct = (step - start) / (end - start) if end != start else 1.0
                if self.anneal_strategy == "cos":
                    return hi + (lo - hi) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (hi - lo) * pct + lo
            start = end
        raise AssertionError("unreachable")


@dataclass(repr=False)
class PerEpoch(Schedule):
    """A schedule declared in epochs and stepped once per epoch: the LR of optimizer step s is
    the inner schedule's LR at epoch ``s // steps_per_epoch``."""

    name: ClassVar[str] = "per_epoch"
    inner: Schedule
    steps_per_epoch: int

    def _lr(self, step: int) -> float:
        return self.inner.lr_at(step // self.steps_per_epoch)

    @property
    def peak_lr(self) -> float:
        return self.inner.peak_lr

    @property
    def warmup_steps(self) -> int:
        return self.inner.warmup_steps * self.steps_per_epoch

    @property
    def unit_steps(self) -> int:
        return self.steps_per_epoch

    def to_spec(self) -> dict[str, Any]:
        return {**self.inner.to_spec(), "interval": "epoch", "steps_per_epoch": self.steps_per_epoch}

    def __repr__(self) -> str:
        return f"per_epoch({self.inner!r}, steps_per_epoch={self.steps_per_epoch})"


SCHEDULES: dict[str, type[Schedule]] = {
    c.name: c
    for c in (Constant, StepDecay, MultiStep, Exponential, Polynomial, InverseTime, Cosine, CosineRestarts,
              WarmupLinear, WarmupCosine, WarmupConstant, WarmupPolynomial, WarmupInverseSqrt, Cyclic, OneCycle)
}
#: spellings people use for the same schedules (torch / HF / Keras names)
ALIASES = {
    "steplr": "step", "multisteplr": "multistep", "multi_step": "multistep", "exponentiallr": "exponential",
    "polynomiallr": "polynomial", "cosineannealinglr": "cosine", "cosine_annealing": "cosine",
    "cosineannealingwarmrestarts": "cosine_restarts", "sgdr": "cosine_restarts", "cycliclr": "cyclic",
    "onecyclelr": "one_cycle", "onecycle": "one_cycle", "linear": "warmup_linear",
    "constant_with_warmup": "warmup_constant", "cosine_with_warmup": "warmup_cosine",
    "linear_with_warmup": "warmup_linear", "inverse_time_decay": "inverse_time", "polynomial_with_warmup": "warmup_polynomial",
    "inverse_sqrt": "warmup_inverse_sqrt",
}
_INT_PARAMS = {"step_size", "total_steps", "warmup_steps", "period", "period_mult", "step_size_up",
               "step_size_down", "decay_steps", "steps_per_epoch", "timescale"}
_BOOL_PARAMS = {"staircase", "three_phase"}
_STR_PARAMS = {"mode", "anneal_strategy"}


def _show(v: Any) -> str:
    """A parameter value for an error message, short (a 400-digit integer is not worth quoting)."""
    r = repr(v) if not isinstance(v, int) or v.bit_length() < 256 else f"an integer of {v.bit_length()} bits"
    return r if len(r) <= 80 else r[:77] + "..."


def _coerce(sched: str, key: str, v: Any) -> Any:
    """Validate one parameter's type and value; a clear ValueError otherwise."""
    where = f"lr_schedule {sched!r}: parameter {key!r}"
    if key in _BOOL_PARAMS:
        if not isinstance(v, bool):
            raise ValueError(f"{where} must be true or false, got {v!r}")
        return v
    if key in _STR_PARAMS:
        if not isinstance(v, str):
            raise ValueError(f"{where} must be a string, got {v!r}")
        return v
    if key == "milestones":
        if not isinstance(v, (list, tuple)) or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in v):
            raise ValueError(f"{where} must be a list of non-negative integers, got {_show(v)}")
        return tuple(sorted(v))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where} must be a number, got {_show(v)}")
    if isinstance(v, int) and abs(v) > FLOAT_MAX:
        raise ValueError(f"{where} is too large: {_show(v)}")
    if not math.isfinite(v):
        raise ValueError(f"{where} must be finite, got {v!r}")
    if key in _INT_PARAMS:
        if float(v) != int(v) or v < 0:
            raise ValueError(f"{where} must be a non-negative integer, got {v!r}")
        v = int(v)
        if v > MAX_STEP:
            raise ValueError(f"{where} must be at most 2^63-1 (the largest step), got {v}")
        if v == 0 and key in {"step_size", "total_steps", "period", "period_mult", "step_size_up",
                              "decay_steps", "steps_per_epoch", "timescale"}:
            raise ValueError(f"{where} must be positive, got 0")
        return v
    if v < 0:
        raise ValueError(f"{where} must be >= 0, got {v!r}")
    return float(v)


def canonical_name(raw: str) -> str:
    """losswatch's name for a schedule name in any accepted spelling (unknown names lower-cased)."""
    return ALIASES.get(raw.lower(), raw.lower())


def build_schedule(spec: dict[str, Any]) -> Schedule:
    """Build a schedule from its declaration ``{"name": ..., **params}``.

    Accepts ``base_lr`` as a synonym of ``lr`` and PyTorch/Hugging Face spellings of the names
    (``CosineAnnealingLR``, ``OneCycleLR``, ``linear``...). ``"interval": "epoch"`` plus
    ``"steps_per_epoch"`` makes a per-epoch schedule. Raises ValueError naming what is wrong.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"lr_schedule must be an object with a 'name', got {type(spec).__name__}")
    raw = spec.get("name")
    if not isinstance(raw, str) or not raw:
        raise ValueError("lr_schedule needs a 'name' (one of: " + ", ".join(SCHEDULES) + ")")
    name = canonical_name(raw)
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule: unknown schedule {raw!r}; known: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[name]
    params = {k: v for k, v in spec.items() if k not in ("name", "interval", "steps_per_epoch")}
    if "base_lr" in params and "lr" not in params and name != "cyclic":
        params["lr"] = params.pop("base_lr")
    known = [f.name for f in fields(cls) if not f.name.startswith("_")]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"lr_schedule {name!r}: unknown parameter(s) {', '.join(unknown)}; accepts {', '.join(known)}")
    optional = [k for k in known if k not in cls.required]
    for k in cls.required:
        if params.get(k) is None:
            raise ValueError(f"lr_schedule {name!r}: missing parameter {k!r} (needs {', '.join(cls.required)}"
                             + (f"; optional {', '.join(optional)})" if optional else ")"))
    # an explicit null is the parameter's default
    clean = {k: _coerce(name, k, v) for k, v in params.items() if v is not None}
    if issubclass(cls, _Warmup):
        if clean.get("warmup_steps") is not None and clean.get("warmup_ratio") is not None:
            raise ValueError(f"lr_schedule {name!r}: give warmup_steps or warmup_ratio, not both")
        if clean.get("warmup_ratio") is not None and clean["warmup_ratio"] > 1:
            raise ValueError(f"lr_schedule {name!r}: warmup_ratio must be in [0, 1], got {clean['warmup_ratio']}")
        if clean.get("warmup_ratio") is not None and clean.get("total_steps") is None:
            raise ValueError(f"lr_schedule {name!r}: warmup_ratio needs total_steps")
    sched = cls(**clean)
    interval = spec.get("interval", "step")
    if interval not in ("step", "epoch"):
        raise ValueError(f"lr_schedule: interval must be 'step' or 'epoch', got {interval!r}")
    if interval == "epoch":
        if spec.get("steps_per_epoch") is None:
            raise ValueError("lr_schedule: interval 'epoch' needs steps_per_epoch")
        return PerEpoch(sched, _coerce(name, "steps_per_epoch", spec["steps_per_epoch"]))
    return sched
