"""SGD efficiency: the loss falls by most of what a linear model of it predicts, so the steps
are far below the curvature scale and the LR can grow."""

from __future__ import annotations

from typing import Any

from .base import fmt
from .raise_lr import RaiseLRDetector
from .types import Action

#: Optimizer names (run metadata ``optimizer``, lower-cased) whose step is ``lr * gradient``
#: (with heavy-ball or Nesterov momentum): the only ones the first-order prediction fits. Adam and
#: its kin rescale each coordinate, so ``lr * |g|^2`` says nothing about their step.
SGD_NAMES = frozenset({"sgd", "torch.optim.sgd", "sgd_momentum", "nesterov", "momentum"})


class SGDEfficiencyDetector(RaiseLRDetector):
    """A too-small LR for plain SGD, measured against the first-order model of the loss.

    A gradient step of size ``lr`` (times ``1 / (1 - momentum)`` once momentum has built up)
    lowers the loss by ``lr * |g|^2`` to first order; curvature and minibatch noise eat into
    that. Over the last ``window`` records the detector compares the real decrease of the loss
    level (``features.slow``) with that prediction (``features.fo``: each record's term weighted
    by the steps since the previous one, so a sparse log predicts the same)::

        efficiency = (level(t - window) - level(t)) / (sum(lr * |g|^2 * steps) / (1 - momentum))

    A well-tuned run spends its steps near the curvature scale and soon at its noise floor: from
    the 256th record on, the benchmark's healthy SGD runs realise <= 0.02 of the prediction (the
    LR x10 runs about 0.00). Their LR/100 siblings realise 0.1-0.9 and most LR/10 ones 0.05-0.5:
    their steps are so short that the loss is almost linear along them, so a longer step buys
    almost proportionally more progress. The softmax LR/10 runs sit at 0.02-0.035, ten times
    their tuned siblings (0.000-0.004), which is why ``ratio`` is 0.03 and not 0.05
    (bench/results/detector-changelog.md: more LR-too-low runs found on the benchmark and both
    held-out seed pairs, no new false alarm; 0.02 adds them). **warning** with ``scale_lr`` (x3 to x10, see ``factor``) when
    ``efficiency >= ratio`` at a checkpoint (every ``every`` records from the ``min_records``-th;
    records, not steps, because the loss level is an average over records), the decrease is real
    (>= ``z`` noise units), the LR was steady over the window (within 2x: a schedule's drop
    anneals the noise away, which is not first-order progress) and over the window before it
    (right after a raise the loss falls to its new floor, fast at any LR), not decayed below
    ``decayed`` x its peak (a decayed schedule's tail is by design), and the window started at
    the run's best level (recovering from a spike is not progress). Resolves at a checkpoint where
    ``efficiency < ratio / 2`` or once the LR has been raised 2x.

    **Early check**: steps far too small show long before the 256th record. At every checkpoint
    from the ``2 * every``-th record (the first ``every`` records are the run's initial
    transient), the same efficiency over the last ``every`` records only, at
    ``efficiency >= ratio * max_factor`` (the efficiency that asks for the full bounded raise)
    with a decrease of ``2 * z`` noise units: an earlier, shorter look needs stronger evidence.
    It also follows a raise up at once: when this detector's advice was followed and the
    window right after the raise is still that efficient, the steps are still far too small (the
    fall to a new floor after a raise to a good LR realises a few percent, ten times less). So a
    run at LR/100 is told x10 at record 128 and, once that is done, x10 again at record 192: the
    closed loop (bench/closed_loop.py) brings digits at LR/100 from 4.0-4.3x its tuned loss to
    within 1.2x, where one raise at record 256 could not (a cosine decay follows). The LR must not
    have risen inside that window (a warm-up is judged at its peak) unless by this advice, nor
    fallen below half. On the benchmark and the five held-out seed pairs it fires on no run
    labelled healthy (bench/results/detector-changelog.md).

    Only built for runs whose metadata says the optimizer is SGD *and* gives its momentum
    (:meth:`from_meta`): ``{"optimizer": "sgd", "momentum": 0.9}`` (0 for plain SGD). The torch,
    Lightning, Hugging Face and Keras integrations fill both from the optimizer.

    Parameters
    ----------
    momentum : float, default 0.0
        From the run metadata (the effective step is ``lr / (1 - momentum)``).
    ratio : float, default 0.03
    window : int, default 128
    every : int, default 64
    min_records : int, default 256
    z : float, default 2.0
    decayed : float, default 0.3
    factor, max_factor : float, default 3.0 and 10.0
        The advised LR factor is ``efficiency / ratio`` (what would bring the efficiency down to
        the threshold if it fell in proportion to the LR; it falls a little slower, so this
        undershoots) within [factor, max_factor]: x10 for steps 100x too small, x3 near the line.

    Examples
    --------
    A loss that falls by exactly ``lr * |g|^2 / (1 - momentum)`` each step (efficiency 1):

    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r", {"optimizer": "sgd", "momentum": 0.9})
    >>> out = [a for s in range(400) for a in eng.update(Record(s, 2.0 - 0.001 * s, 1.0, 1e-4))]
    >>> [(a.kind, a.step, a.action.params, round(a.evidence["efficiency"], 2))
    ...  for a in out if a.detector == "sgd_efficiency"]
    [('plateau', 127, {'factor': 10.0}, 1.0)]

    References
    ----------
    The first-order decrease ``lr * |g|^2`` is the "gradient-descent lemma" (Nesterov, Lectures on
    Convex Optimization, 1.2.3); McCandlish et al., "An Empirical Model of Large-Batch Training"
    (2018) use the same ratio of realised to predicted improvement to read the noise scale.
    """

    name = "sgd_efficiency"
    kind = "plateau"
    static_screen = True

    def __init__(self, momentum: float = 0.0, ratio: float = 0.03, window: int = 128, every: int = 64,
                 min_records: int = 256, z: float = 2.0, decayed: float = 0.3, factor: float = 3.0,
                 max_factor: float = 10.0) -> None:
        super().__init__(momentum=momentum, ratio=ratio, window=window, every=every, min_records=min_records,
                         z=z, decayed=decayed, factor=factor, max_factor=max_factor)
        # cps: str(k) -> [level, fo, step, best, lr] at record k * every (the last 2 windows)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], **params: Any) -> "SGDEfficiencyDetector | None":
        name = (meta or {}).get("optimizer")
        if not isinstance(name, str) or name.strip().lower() not in SGD_NAMES:
            return None
        # "sgd" alone is ambiguous (most SGD runs use momentum 0.9, which makes the steps 10x
        # longer than lr * g): without the momentum the step size is unknown, so stay silent
        m = meta.get("momentum")
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
            return None
        return cls(**{**params, "momentum": float(m)})

    def screen(self, f):
        return f.a("rec") % self.every == 0

    def step(self, f, i: int) -> None:
        step = f.step[i]
        lrok = f.lrok[i]
        self.resolve_if_raised(f, i)
        rec = f.rec[i]
        if rec % self.every:
            return
        k = rec // self.every  # one row per record ordinal: each checkpoint is seen once
        if f.nl[i] == 0 or not lrok:
            return
        level, fo, lr = f.slow[i], f.fo[i], f.lr[i]
        self.cps[str(k)] = [level, fo, step, f.best[i], lr]
        back = self.window // self.every
        for old in [key for key in self.cps if int(key) < k - 2 * back]:
            del self.cps[old]
        prev = self.cps.get(str(k - back))
        judged = prev is not None and rec >= self.min_records
        if self.alert is not None:
            if prev is not None and judged:
                eff = self._efficiency(prev, level, fo)[2]
                if eff < 0.5 * self.ratio:
                    self.close_episode(step, f"the steps now realise {fmt(eff)} of their first-order "
                                             "decrease: progress is limited by curvature or noise, not the LR")
            return
        if prev is not None and judged and self._too_small(f, i, k, back, prev):
            self._advise(f, i, prev)
        elif self._far_too_small(f, i, self.cps.get(str(k - 1))):
            self._advise(f, i, self.cps[str(k - 1)])

    def _efficiency(self, start: list[float], level: float, fo: float) -> tuple[float, float, float]:
        """(loss decrease, first-order decrease, efficiency) from the checkpoint ``start`` to now."""
        made = start[0] - level
        predicted = (fo - start[1]) / (1.0 - self.momentum)
        return made, predicted, (made / predicted if predicted > 0.0 else 0.0)

    def _usable(self, f, i: int, start: list[float]) -> bool:
        """Guards both checks share: the LR not decayed below ``decayed`` x its peak (a decayed
        schedule's slow tail is by design), and the window not a recovery (it started at the
        best level)."""
        peak = f.peak[i]
        if peak > 0.0 and f.lr[i] < self.decayed * peak:
            return False
        return not self.recovering(start[0], start[3], f.sd[i])

    def _too_small(self, f, i: int, k: int, back: int, prev: list[float]) -> bool:
        """The ordinary check: over the last ``window`` records, efficiency >= ``ratio`` and a
        decrease of ``z`` noise units, at an LR steady over this window and the one before."""
        made, _, eff = self._efficiency(prev, f.slow[i], f.fo[i])
        if eff < self.ratio or made < self.z * f.sd[i]:
            return False
        lr, lr_c = f.lr[i], prev[4]
        if not 0.5 * lr_c <= lr <= 2.0 * lr_c:
            return False  # the schedule changed the LR inside the window
        before = self.cps.get(str(k - 2 * back))
        if before is not None and not 0.5 * before[4] <= lr <= 2.0 * before[4]:
            # ... or in the window before it: after a raise the loss falls towards its new floor
            # for a while, fast but not first-order progress (a tuned run is past that by then)
            return False
        return self._usable(f, i, prev)

    def _far_too_small(self, f, i: int, start: list[float] | None) -> bool:
        """The early check, over the last ``every`` records only, from the ``2 * every``-th
        record (the first ``every`` are the run's initial transient) and again right after a
        raise: efficiency >= ``ratio * max_factor`` (what asks for the full bounded raise) and a
        decrease of ``2 * z`` noise units. A look this early and this short needs stronger
        evidence than the ordinary check, and gets it: the fall to a new floor right after a
        raise to a good LR realises a few percent, ten times less. The LR must not have risen
        inside the window (a warm-up is still raising it: judge it at its peak) unless the rise
        was this detector's advice followed, nor fallen below half its value (a drop anneals
        the noise away, which is not first-order progress)."""
        if start is None:
            return False
        made, _, eff = self._efficiency(start, f.slow[i], f.fo[i])
        if eff < self.ratio * self.max_factor or made < 2.0 * self.z * f.sd[i]:
            return False
        lr, lr_c, step_c = f.lr[i], start[4], start[2]
        if lr < 0.5 * lr_c:
            return False
        if lr > lr_c * 1.001 and not step_c < self.raised_step <= f.step[i]:
            return False
        return self._usable(f, i, start)

    def _advise(self, f, i: int, start: list[float]) -> None:
        step, level, lr = f.step[i], f.slow[i], f.lr[i]
        level_c, _, step_c, _, _ = start
        made, predicted, eff = self._efficiency(start, level, f.fo[i])
        self.lr_at_alert = lr
        up = min(self.max_factor, max(self.factor, eff / self.ratio if self.ratio > 0.0 else self.max_factor))
        ev = {"efficiency": eff, "loss_decrease": made, "first_order_decrease": predicted,
              "window_start_step": int(step_c), "lr": lr, "momentum": self.momentum}
        self.open_episode(
            step, "warning",
            f"steps far too small: since step {int(step_c)} the loss fell {fmt(level_c)} -> "
            f"{fmt(level)}, {fmt(100 * eff)}% of what a linear loss would give at this LR "
            "(tuned SGD runs realise a few percent): the LR is limiting training",
            ev,
            Action("scale_lr", {"factor": up},
                   f"Each SGD step is so short that the loss is almost linear along it: raise the "
                   f"LR x{fmt(up)} (or run an LR range test)."))
