"""Oscillation: the loss zig-zags with a large amplitude instead of descending."""

from __future__ import annotations

from typing import Any

from .base import Detector, fmt
from .types import Action


class OscillationDetector(Detector):
    """The loss changes direction nearly every step (``alt >= zigzag``), each swing is large
    (``amp >= amplitude`` x the level) and the trend has stopped improving for ``stall`` steps,
    while the LR is not cyclic: the LR is too high (the iterate bounces across a valley).

    Why: independent minibatch noise flips direction on ~2/3 of steps; a too-large step on a
    sharp valley flips on ~every step (period-2 oscillation). The EMA of that indicator reached
    0.85 by chance on healthy linear-regression runs of the benchmark and 0.90 on its tiny
    language models; no benchmark run shows true period-2 oscillation (the rule found no true
    case there), so the bar is 0.95, which a clean zig-zag (-> 1.0) still passes. The amplitude bar keeps a quiet
    converged run (tiny swings) silent. Under a cyclic LR (>= 2 LR reversals) the loss follows
    the LR by design: no alert.
    **warning**, action ``scale_lr`` x``factor``. Resolves when the zig-zag fades.

    Parameters
    ----------
    zigzag : float, default 0.95
    amplitude : float, default 0.05
    stall : int, default 50
    factor : float, default 0.3
    min_records : int, default 30

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> losses = [2.0 + (0.5 if s % 2 else 0.0) for s in range(200)]
    >>> out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x, lr=0.1))]
    >>> [(a.kind, a.severity, a.action.type) for a in out if a.kind == "oscillation"][:1]
    [('oscillation', 'warning', 'scale_lr')]

    References
    ----------
    AutoTrainer (oscillating loss -> LR x0.1); Cohen et al., "Edge of stability" (2021).
    """

    name = "oscillation"
    kind = "oscillation"
    static_screen = True

    def __init__(self, zigzag: float = 0.95, amplitude: float = 0.05, stall: int = 50,
                 factor: float = 0.3, min_records: int = 30) -> None:
        super().__init__(zigzag=zigzag, amplitude=amplitude, stall=stall, factor=factor,
                         min_records=min_records)

    def screen(self, f):
        return f.a("lok") & ~(f.a("alt") < self.zigzag) & (f.a("nl") >= self.min_records)

    def active_screen(self, f):
        return f.a("lok") & ~(f.a("alt") >= self.zigzag * 0.9)

    def step(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        alt = f.alt[i]
        step = f.step[i]
        if self.alert is not None:
            if alt < self.zigzag * 0.9:
                self.close_episode(step, "the loss no longer zig-zags")
            return
        if f.nl[i] < self.min_records or alt < self.zigzag:
            return
        level = f.slow[i]
        amp = f.amp[i]
        rel = amp / abs(level) if level != 0.0 else 0.0
        if rel < self.amplitude or step - f.pstep[i] < self.stall:
            return
        if f.rev[i] >= 2:
            return  # cyclic LR: the loss follows it by design
        ev: dict[str, Any] = {"zigzag": alt, "amplitude": rel, "level": level}
        if f.lrok[i]:
            ev["lr"] = f.lr[i]
        self.open_episode(step, "warning",
                          f"loss oscillating at step {step}: it changes direction on "
                          f"{fmt(100 * alt)}% of steps with swings of {fmt(100 * rel)}% and no progress",
                          ev, Action("scale_lr", {"factor": self.factor},
                                     f"The loss bounces up and down every step instead of descending: "
                                     f"the LR is too high for this valley. Lower it x{fmt(self.factor)}."))
