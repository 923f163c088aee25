"""A dead run: the network stopped learning (its loss is frozen, or sits at chance level)."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from .base import Detector, fmt
from .features import lr_ramping
from .lost import blew_up
from .types import Action

#: Class counts whose chance-level cross-entropy ln(k) a stuck classifier sits at (binary, small
#: multi-class, CIFAR-100/ImageNet-style), and vocabulary sizes of common tokenizers (an LM that
#: predicts the uniform distribution): BERT 30522, LLaMA 32000, T5 32100, Mistral 32768, GPT-2
#: 50257/50304, RoBERTa/BART 50265, 65536, cl100k 100277, Llama-3 128256, Qwen 151936, XLM-R
#: 250002, Gemma 256000.
CHANCE_CLASSES = tuple(range(2, 11)) + (100, 1000) + (
    30522, 32000, 32100, 32768, 50257, 50265, 50304, 65536, 100277, 128256, 151936, 250002, 256000)
CHANCE_LEVELS = np.array(sorted(math.log(k) for k in CHANCE_CLASSES))
_LEVELS = CHANCE_LEVELS.tolist()  # the same, for bisect on the one-record path
_CHANCE_K = {math.log(k): k for k in CHANCE_CLASSES}
#: Below this a loss printed with four decimals keeps fewer than three significant digits.
COARSE_BELOW = 0.01


def same_4_digits(x: float, prev: float) -> bool:
    """Are two logged losses the same to four significant digits (a frozen print)?

    Not for a value that, printed with four decimals, keeps fewer than three significant digits
    (0 < |x| < 0.01 on the 1e-4 grid): Hugging Face's Trainer rounds the loss it logs to four
    decimals and Keras prints four, so a converged loss of 0.0003 prints the same on every line
    while it still moves by tens of percent. Such a repeat says nothing about a frozen model.
    """
    d = x - prev
    if d < 0.0:
        d = -d
    ax = x if x >= 0.0 else -x
    if ax == 0.0:
        return d == 0.0
    if ax < COARSE_BELOW:
        q = ax * 1e4
        if abs(q - round(q)) <= 1e-6 * q:
            return False  # four decimals of a small loss: two significant digits at most
    return d <= 5e-5 * ax


def chance_level(x: float, band: float) -> float | None:
    """The chance level ln(k) (of CHANCE_CLASSES) within ``band`` (relative) of ``x``, if any."""
    j = bisect.bisect_left(_LEVELS, x)
    for c in (j - 1, j):
        if 0 <= c < len(_LEVELS):
            lv = _LEVELS[c]
            if abs(x - lv) <= band * lv:
                return lv
    return None


class DeadDetector(Detector):
    """The loss stopped moving: a network that no longer learns (saturated units, an LR far off,
    a data or label bug). Fires from the first records it can see it in.

    Rule (either):

    * *frozen*: ``frozen_records`` consecutive finite losses (or validation losses) the same to
      four significant digits. Real minibatch losses always move in the 4th digit; a printed
      0.6931 twenty times, or an epoch validation loss of exactly 0.2000, is a constant output.
      A frozen validation loss counts only where the training loss (if logged) is frozen too (a
      logger that repeats the last evaluation on every line is not a frozen model) and only when
      it never fell below 0.9x its first value (a converged evaluation at the end of a long
      decay prints the same four digits).
      A loss frozen at exactly 0 counts only when the run started there (a model that memorised
      its data prints 0.0000 too, with a zero grad-norm, and is not dead); a small loss printed
      with four decimals (0.0003, fewer than three significant digits) is not judged at all:
      a converged fine-tune prints the same value while its loss still moves (:func:`same_4_digits`).
    * *at chance*: ``chance_records`` consecutive losses all within ``chance_band`` of the same
      chance level ln(k) (:data:`CHANCE_CLASSES`: k classes, or a tokenizer's vocabulary), the
      last half of them without a new low of the raw best (``features.rbest``) in the first four
      digits: the
      network predicts the uniform distribution (0.6931 = ln 2, 2.3026 = ln 10, 10.37 = ln 32000).
      A healthy loss that descends through ln(k) keeps making new lows. Not while the LR still
      ramps up on the record (:func:`~losswatch.detectors.features.lr_ramping`: a warm-up, a
      one-cycle's first phase): a network that has not had its LR yet sits at chance because it
      starts there (a one-cycle CNN at 1/50 of its peak LR stayed within 0.2 % of ln 10 for 19
      records, then learned); the run of records goes on counting, so a dead one is named on the
      first record after the ramp.

    **warning**, kind ``dead``. Action by evidence: when the loss had blown up (its level reached
    ``blowup`` x the first loss) before it froze, the LR killed the units: ``scale_lr``
    x``factor``, restarting from a checkpoint before the blow-up. Otherwise ``stop``: check the
    data (labels all one class?), the loss, the initialisation, and whether the LR is far off.
    Resolves once the loss has moved off the frozen value or chance level (``rearm`` records).

    Parameters
    ----------
    frozen_records : int, default 6
        six identical prints: the issue threads' frozen runs show 9-20; five in a row already
        has a chance of ~1e-10 for a real minibatch loss with 0.1% noise
    chance_records : int, default 6
    chance_band : float, default 0.002
        0.2% of ln(k) (2.3026 +- 0.005): a network with a constant output prints ln(k) to three
        or four digits on every record (per-epoch logs of dead CNNs: 2.3021-2.3030), while a
        healthy run that starts at chance wobbles by ~1% with its minibatches (the benchmark's
        SGD CNNs sit within 1% of ln 10 for up to 42 steps before they learn, within 0.2% for
        at most 10 records in a row, and those only at 10x their tuned LR)
    blowup : float, default 2.0
    factor : float, default 0.1
    rearm : int, default 3

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> losses = [0.7, 0.6932, 0.6931, 0.6931, 0.6932, 0.6931, 0.6931, 0.6931, 0.6932]
    >>> out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x))]
    >>> [(a.kind, a.step, a.action.type) for a in out]
    [('dead', 6, 'stop')]

    References
    ----------
    runmedic (loss near ln(k) = uniform over k classes); SageMaker Debugger's "loss not
    decreasing" and "stalled training" rules; Keras and PyTorch forum threads "loss stuck at
    0.6931 / 2.3026".
    """

    name = "dead"
    kind = "dead"

    def __init__(self, frozen_records: int = 6, chance_records: int = 6, chance_band: float = 0.002,
                 blowup: float = 2.0, factor: float = 0.1, rearm: int = 3) -> None:
        super().__init__(frozen_records=frozen_records, chance_records=chance_records,
                         chance_band=chance_band, blowup=blowup, factor=factor, rearm=rearm)
        # runs are keyed on record counts (the finite-loss count nl, the val count), so rows the
        # screen skips break a run exactly as they should
        self.fz_start = self.fz_last = -1  # frozen loss: nl at its start / at its last row
        self.ch_level = -1.0  # chance level of the current run
        self.ch_start = self.ch_last = -1
        self.ch_rbest = math.inf  # raw best on the run's previous record, and the record ordinal
        self.ch_improved = -1  # (nl) of its last real improvement: a dead run makes no new lows
        self.v_prev = math.nan  # last finite val loss and the run of equal ones
        self.v_first = math.nan
        self.v_n = 0
        self.moved = 0  # records off the dead value since the episode opened

    def get_state(self) -> dict[str, Any]:
        return {"fz_start": self.fz_start, "fz_last": self.fz_last, "ch_level": self.ch_level,
                "ch_start": self.ch_start, "ch_last": self.ch_last, "ch_rbest": self.ch_rbest,
                "ch_improved": self.ch_improved,
                "v_prev": self.v_prev, "v_first": self.v_first,
                "v_n": self.v_n, "moved": self.moved}

    def set_state(self, d: dict[str, Any]) -> None:
        for k in ("fz_start", "fz_last", "ch_level", "ch_start", "ch_last", "ch_rbest", "ch_improved", "v_prev",
                  "v_first", "v_n", "moved"):
            setattr(self, k, d[k])

    def screen(self, f):
        with np.errstate(all="ignore"):
            x, prev = f.a("loss"), f.a("b_lprev")
            ax = np.abs(x)
            frozen = np.abs(x - prev) <= 5e-5 * ax * 1.0001 + 1e-300
            j = np.clip(np.searchsorted(CHANCE_LEVELS, x), 1, len(CHANCE_LEVELS) - 1)
            near = np.minimum(np.abs(x - CHANCE_LEVELS[j - 1]), np.abs(x - CHANCE_LEVELS[j]))
            chance = near <= self.chance_band * x * 1.0001
            return (f.a("lok") & (frozen | chance)) | f.a("vok")

    def step(self, f, i: int) -> None:
        lok, vok = f.lok[i], f.vok[i]
        if not (lok or vok):
            return
        if self.alert is not None:
            self._maybe_resolve(f, i)
            return
        why = None
        if vok:
            v = f.val[i]
            self.v_n = self.v_n + 1 if same_4_digits(v, self.v_prev) and self._zero_ok(v, f, i) else 1
            self.v_prev = v
            if self.v_first != self.v_first:
                self.v_first = v
            # a logger that repeats the last evaluation on every training line while the
            # training loss moves is not a frozen model; and an evaluation that converged (well
            # below where it started) prints the same 4 digits at the end of a long decay
            if self.v_n >= self.frozen_records and not (lok and not same_4_digits(f.loss[i], f.b_lprev[i])) \
                    and not (self.v_first > 0.0 and v < 0.9 * self.v_first):
                why = (f"the validation loss has been {fmt(v)} for {self.v_n} evaluations in a row", v)
        if lok:
            x, nl = f.loss[i], f.nl[i]
            frozen = nl > 1 and same_4_digits(x, f.b_lprev[i])
            lv = chance_level(x, self.chance_band)
            if not vok and not frozen and lv is None:
                return  # nothing frozen, nothing at chance: the runs break by their record counts
            if frozen and self._zero_ok(x, f, i):
                if self.fz_last != nl - 1:
                    self.fz_start = nl - 1  # the previous record is the first of the run
                self.fz_last = nl
                n = nl - self.fz_start + 1
                if why is None and n >= self.frozen_records:
                    why = (f"the loss has been {fmt(x)} for {n} records in a row", x)
            if lv is not None:
                rb = f.rbest[i]
                if self.ch_last != nl - 1 or lv != self.ch_level:
                    self.ch_start, self.ch_level, self.ch_improved = nl, lv, nl
                elif rb < self.ch_rbest - 5e-5 * lv:  # a new low beyond the 4th digit
                    self.ch_improved = nl
                self.ch_rbest = rb
                self.ch_last = nl
                n = nl - self.ch_start + 1
                # a loss still making new lows is descending through ln(k), not stuck at it; and
                # while the LR still ramps up (a warm-up, a one-cycle's first phase) the network
                # has not had its LR yet: at chance is where it starts, not where it died
                if why is None and n >= self.chance_records and \
                        nl - self.ch_improved >= self.chance_records // 2 and not lr_ramping(f, i):
                    why = (f"the loss has sat at {fmt(x)} for {n} records: ln({_CHANCE_K[lv]}) = "
                           f"{lv:.4f}, the loss of a uniform guess over {_CHANCE_K[lv]} classes", lv)
        if why is not None:
            self._open(f, i, why)

    def _zero_ok(self, x: float, f, i: int) -> bool:
        """A frozen 0 is dead only from the start or with a zero grad-norm (see the class doc)."""
        return x != 0.0 or f.l0[i] == 0.0

    def _open(self, f, i: int, why: tuple[str, float]) -> None:
        step, l0 = f.step[i], f.l0[i]
        text, value = why
        ev: dict[str, Any] = {"value": value, "first_loss": l0}
        if l0 == l0 and blew_up(f.worst[i], l0, self.blowup):
            ev["blew_up_to"] = f.worst[i]
            act = Action("scale_lr", {"factor": self.factor},
                         f"The network stopped learning after its loss blew up to {fmt(f.worst[i])} "
                         f"(it started at {fmt(l0)}): the LR saturated its units. Restart from a "
                         f"checkpoint before the blow-up with the LR cut {fmt(1 / self.factor)}x.")
        else:
            act = Action("stop", {}, "The network is not learning: a constant loss means a constant "
                         "output. Stop and check the data (are the labels all one class?), the loss "
                         "function and the initialisation; an LR far too high or too low does it too.")
        self.moved = 0
        self.open_episode(step, "warning", f"run is dead at step {step}: {text}", ev, act)

    def _maybe_resolve(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        assert self.alert is not None  # called while an episode is open
        dead = self.alert.evidence.get("value", math.nan)
        x = f.loss[i]
        if abs(x - dead) > max(2.0 * self.chance_band * abs(dead), 1e-12):
            self.moved += 1
            if self.moved >= self.rearm:
                self.close_episode(f.step[i], f"loss moving again ({fmt(x)})")
                self.fz_last = self.ch_last = -1
                self.v_n = 0
        else:
            self.moved = 0
