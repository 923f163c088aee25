"""LR range test ("LR finder") for PyTorch, run inside the user's own training loop.

The LR is swept from ``start_lr`` to ``end_lr`` (exponentially by default, or linearly) over at
most ``num_steps`` optimizer steps; the sweep stops early once the loss explodes (non-finite, or
``diverge_factor`` x the best smoothed loss); the model's and optimizer's state are restored
afterwards, so the range test leaves no trace on training. The sweep can be streamed to a
losswatch service as a run of its own (``url=`` or ``monitor=``), and saved as CSV for
``losswatch lr-find``. The analysis is ``losswatch.detectors.lr_finder.suggest_lr`` (needs numpy;
without it ``suggestion`` stays None and the sweep is still recorded).

Standard library only at import time; torch is used only through the objects you pass in.

Usage, in your own loop::

    from losswatch.client.lr_range_test import LRRangeTest
    with LRRangeTest(model, optimizer, start_lr=1e-7, end_lr=10, num_steps=100) as rt:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            if rt.record(loss):          # True once the sweep is over (done or exploded)
                break
    print(rt.suggestion.suggested_lr, rt.suggestion.reason)
    rt.save("sweep.csv")                 # losswatch lr-find sweep.csv

or, with a closure that does one training step and returns its loss::

    result = lr_range_test(model, optimizer, train_step, num_steps=100)

Why the LR is set *before* each step and recorded with the loss of that step: the loss
reported by step k was computed with the weights left by steps < k, so it reflects the LRs up
to k-1; this is the usual convention (fastai, torch-lr-finder) and the smoothing in the analysis
absorbs the one-step lag.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from typing import Any, Callable

__all__ = ["LRRangeTest", "lr_range_test"]


def _as_float(loss: Any) -> float:
    """A Python float from a float, numpy scalar or (one-element) torch tensor."""
    if hasattr(loss, "detach"):
        loss = loss.detach()
    if hasattr(loss, "item"):
        return float(loss.item())
    return float(loss)


class LRRangeTest:
    """One LR range test. See the module docstring.

    Parameters
    ----------
    model : torch.nn.Module or None
        Its ``state_dict`` is saved on entry and restored on exit (None: nothing restored).
    optimizer : torch.optim.Optimizer
        Every param group's LR is driven by the sweep; its state is restored on exit.
    start_lr, end_lr : float
        The sweep's range (defaults 1e-7 .. 10, wide enough for SGD and Adam alike).
    num_steps : int
        Sweep length (default 100).
    mode : {"exp", "linear"}
        Exponential sweeps spend as many steps per decade everywhere; linear ones spend almost
        all of them near end_lr.
    diverge_factor : float
        Stop once the (EMA-smoothed, beta 0.9) loss exceeds this many times its best (4, as fastai
        and torch-lr-finder's 5 do in spirit). Non-finite losses always stop the sweep.
    min_steps : int
        Never stop for divergence before this many steps (the first batches are noisy).
    restore : bool
        Restore model and optimizer state on exit (default True).
    url, monitor, run_id, project
        Stream the sweep as a run of its own to a losswatch service: pass a ``Monitor`` or a URL
        (a Monitor is created and closed here). Neither: offline.
    """

    def __init__(self, model: Any, optimizer: Any, *, start_lr: float = 1e-7, end_lr: float = 10.0,
                 num_steps: int = 100, mode: str = "exp", diverge_factor: float = 4.0, min_steps: int = 10,
                 restore: bool = True, url: str | None = None, monitor: Any = None, run_id: str | None = None,
                 project: str | None = None) -> None:
        if mode not in ("exp", "linear"):
            raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
        if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
            raise ValueError(f"need 0 < start_lr < end_lr (finite), got {start_lr!r}..{end_lr!r}")
        if int(num_steps) < 5:
            raise ValueError(f"num_steps must be at least 5, got {num_steps!r}")
        self.model, self.optimizer = model, optimizer
        self.start_lr, self.end_lr = float(start_lr), float(end_lr)
        self.num_steps, self.mode = int(num_steps), mode
        self.diverge_factor, self.min_steps = float(diverge_factor), int(min_steps)
        self.restore = restore
        self.run_id = run_id or f"lr-range-test-{int(time.time())}"
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.stopped_because: str | None = None
        self.suggestion: Any = None
        self._url, self._project = url, project
        self._monitor = monitor
        self._own_monitor = False
        self._smoothed: float | None = None
        self._best: float = math.inf
        self._saved: tuple[Any, Any] | None = None

    # -- sweep ------------------------------------------------------------------------------------
    def lr_at(self, k: int) -> float:
        """The LR of sweep step k (0-based)."""
        t = k / max(1, self.num_steps - 1)
        if self.mode == "exp":
            return self.start_lr * (self.end_lr / self.start_lr) ** t
        return self.start_lr + (self.end_lr - self.start_lr) * t

    def _set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def __enter__(self) -> "LRRangeTest":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()

    def start(self) -> None:
        """Save state, set the first LR, open the stream."""
        self._saved = (copy.deepcopy(self.model.state_dict()) if self.model is not None else None,
                       copy.deepcopy(self.optimizer.state_dict()))
        self._set_lr(self.lr_at(0))
        if self._monitor is None and self._url:
            try:
                from losswatch.client import Monitor

                self._monitor = Monitor(run_id=self.run_id, url=self._url, project=self._project,
                                        meta={"kind": "lr_range_test", "start_lr": self.start_lr,
                                              "end_lr": self.end_lr, "num_steps": self.num_steps,
                                              "mode": self.mode})
                self._own_monitor = True
            except Exception as e:  # streaming is a convenience: the sweep still runs offline
                import warnings

                warnings.warn(f"losswatch: range test runs offline ({e})", stacklevel=2)
                self._monitor = None

    @property
    def done(self) -> bool:
        return self.stopped_because is not None

    def record(self, loss: Any) -> bool:
        """Record the loss of the step just taken at the current LR; move to the next LR.

        Returns True when the sweep is over (all steps done, or the loss exploded): stop looping.
        """
        if self.done:
            return True
        k = len(self.lrs)
        lr = self.lr_at(k)
        value = _as_float(loss)
        self.lrs.append(lr)
        self.losses.append(value)
        if self._monitor is not None:
            self._monitor.log(k, loss=value, lr=lr)
        if not math.isfinite(value):
            self.stopped_because = f"the loss became {value} at lr {lr:.3g}"
        else:
            self._smoothed = value if self._smoothed is None else 0.9 * self._smoothed + 0.1 * value
            # bias-corrected EMA so the first steps are not pulled towards 0
            est = self._smoothed / (1 - 0.9 ** (k + 1)) if k else value
            self._best = min(self._best, est)
            if k >= self.min_steps and self._best > 0 and est > self.diverge_factor * self._best:
                self.stopped_because = (f"the smoothed loss {est:.4g} passed {self.diverge_factor:g}x its best "
                                        f"{self._best:.4g} at lr {lr:.3g}")
        if not self.done and k + 1 >= self.num_steps:
            self.stopped_because = f"the sweep reached end_lr {self.end_lr:.3g}"
        if not self.done:
            self._set_lr(self.lr_at(k + 1))
        return self.done

    def finish(self) -> None:
        """Restore state, analyse the sweep, close the stream. Safe to call twice."""
        if self._saved is not None and self.restore:
            model_state, opt_state = self._saved
            if model_state is not None:
                self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(opt_state)  # also restores each group's original lr
        self._saved = None
        if self.stopped_because is None:
            self.stopped_because = "the loop ended before the sweep did"
        if self._monitor is not None and self._own_monitor:
            try:
                self._monitor.close()
            finally:
                self._monitor = None
        try:
            from losswatch.detectors.lr_finder import suggest_lr
        except ImportError:  # numpy absent: the sweep is recorded, analyse it later
            return
        try:
            self.suggestion = suggest_lr(self.lrs, self.losses)
        except ValueError as e:
            self.suggestion = None
            self.analysis_error = str(e)

    def save(self, path: str) -> None:
        """Write the sweep as CSV (step, lr, loss) for ``losswatch lr-find``."""
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "lr", "loss"])
            for k, (lr, loss) in enumerate(zip(self.lrs, self.losses)):
                w.writerow([k, repr(lr), repr(loss)])


def lr_range_test(model: Any, optimizer: Any, train_step: Callable[[], Any], **kwargs: Any) -> LRRangeTest:
    """Run a range test with ``train_step()`` doing one training step and returning its loss.

    Keyword arguments are those of :class:`LRRangeTest`. Returns the finished test (``.lrs``,
    ``.losses``, ``.suggestion``, ``.stopped_because``).
    """
    rt = LRRangeTest(model, optimizer, **kwargs)
    with rt:
        while not rt.record(train_step()):
            pass
    return rt
