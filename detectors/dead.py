"""A dead run: the network stopped learning (its loss is frozen, or sits at chance level)."""

from __future__ import annotations

import bisect
import math
from typing import Any, ClassVar, NamedTuple

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


def exact_repeat(x: float, prev: float) -> bool:
    """Is ``x`` the same value as ``prev`` to six significant digits, printed with more than five?

    A network whose weights still change moves its evaluation loss in the sixth digit between
    two evaluations; the same six digits (or the same float, as Lightning's and the Trainer's
    full-precision logs write it) mean the weights did not change. A value printed with five
    significant digits or fewer (0.2298, 2.3026) repeats at that precision while the model
    still moves: :func:`same_4_digits` and its guards judge those.
    """
    ax = x if x >= 0.0 else -x
    if not 1e-200 < ax < 1e200:  # 0, NaN, inf, and magnitudes no loss has (the power overflows)
        return False
    d = x - prev
    if d < 0.0:
        d = -d
    if not d <= 5e-7 * ax:
        return False
    q = ax * 10.0 ** (4 - math.floor(math.log10(ax)))  # five significant digits before the point
    return abs(q - round(q)) > 1e-6 * q


def chance_level(x: float, band: float) -> float | None:
    """The chance level ln(k) (of CHANCE_CLASSES) within ``band`` (relative) of ``x``, if any."""
    j = bisect.bisect_left(_LEVELS, x)
    for c in (j - 1, j):
        if 0 <= c < len(_LEVELS):
            lv = _LEVELS[c]
            if abs(x - lv) <= band * lv:
                return lv
    return None


class Why(NamedTuple):
    """What a rule saw: the alert's words, the dead value, and what the episode watches to
    resolve (the column, and how far off the value a record must be: None, the chance band)."""

    text: str
    value: float
    column: str = "loss"
    off: float | None = None


class DeadDetector(Detector):
    """The loss stopped moving: a network that no longer learns (saturated units, an LR far off,
    a data or label bug). Fires from the first records it can see it in.

    Rule (any):

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
    * *weights frozen*: ``frozen_records`` evaluations in a row, each logged apart from the one
      before (records without an evaluation between them: separate evaluations, not a logger
      repeating the last one), return the same validation loss to six significant digits,
      printed with more than five (:func:`exact_repeat`). An evaluation of weights that still
      change moves in the sixth digit, however converged the model; the same float six times is
      a model whose weights no longer change (an optimizer that does not step, parameters
      detached from it, an LR schedule at 0). Not while a logged LR is at or below ``lr_off`` x
      its peak: the schedule froze the weights on purpose, or a schedule bug the LR rules
      report with the right advice.
    * *at chance*: ``chance_records`` consecutive losses all within ``chance_band`` of the same
      chance level ln(k) (:data:`CHANCE_CLASSES`: k classes, or a tokenizer's vocabulary), the
      last half of them without a new low of the raw best (``features.rbest``) in the first four
      digits: the
      network predicts the uniform distribution (0.6931 = ln 2, 2.3026 = ln 10, 10.37 = ln 32000).
      A healthy loss that descends through ln(k) keeps making new lows. Not while a logged LR is
      still ramping up (``features.lr_ramping``): a run at chance in its warm-up has not had its
      LR yet (a healthy one-cycle CNN of the benchmark sits within 0.2% of ln 10 at steps
      14-19 while its LR climbs from 1/25 of its peak); judged again once the ramp ends.
    * *evaluations at chance*: ``chance_records`` evaluations in a row within
      ``val_chance_band`` of the same chance level ln(k), the training loss logged with each
      (or the last before it, when logged at all) within that band of the same level, and no
      new low of the validation loss (beyond its fourth digit) in the last half of them. An
      evaluation averages the whole validation set, so a network with a near-constant output
      sits at ln(k) to about 1% on every one (a binary video classifier: 0.688-0.701, its
      validation accuracy exactly 0.5), while one that learns leaves the band downwards.
    * *collapsed*: ``collapse_records`` consecutive losses at or above the first loss, within
      ``chance_band`` of each other, after the raw best had fallen ``collapse_drop`` below the
      first loss: the network learned, lost all of it and now returns a constant output (a
      video-only speech model from scratch: 3.14 -> 2.91, then 3.321-3.327 with its error
      rates pinned at 1.0). A healthy run at its first loss (the benchmark's character models
      print 4.587 within 0.2% for their first 5-7 records) has made no progress to lose.

    **warning**, kind ``dead``. Action by evidence: when the loss had blown up (its level reached
    ``blowup`` x the first loss) or collapsed (back at or above the first loss after its raw
    best was ``collapse_drop`` below it) before it froze, the LR saturated the units:
    ``scale_lr`` x``factor``, restarting from a checkpoint before the blow-up. Otherwise
    ``stop``: check the data (labels all one class?), the loss, the initialisation, and whether
    the LR is far off. Resolves once the loss has moved off the frozen value or chance level
    (``rearm`` records).

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
    val_chance_band : float, default 0.015
        1.5% of ln(k) for evaluations. Set by: on the benchmark (seeds 0-7, 1,110 runs,
        evaluated every 25 steps) no healthy run has more than 3 evaluations in a row within
        1.5% of ln(k) with its training loss there too, and no healthy or LR-too-low run
        fires the rule; the 25 runs that do are LR x10/x100 runs stuck at chance (6-25
        evaluations). The real corpus's dead logs sit within 0.2-1.2%; 2% adds no healthy run
        either.
    collapse_records : int, default 5
        Set by: 4 or 5 records within 0.2% at or above the first loss after a 2-5% fall fire
        on no healthy benchmark run (seeds 0-7) nor healthy log of the corpus's tune part (5:
        two LR x10 runs stuck at chance); 5 is the frozen stretch of the shortest collapsed
        log of the corpus.
    collapse_drop : float, default 0.05
        How far below the first loss the raw best must have been (relative): progress to lose.
        Set by: 0.02 and 0.05 flag the same runs (the collapsed log's best is 6% below its first
        loss; on the benchmark two LR x10 runs that sit at chance after learning).
    lr_off : float, default 0.01
        An LR at or below this fraction of its peak has switched training off (benchmark
        schedule bugs that reach 0 freeze their evaluations to the last digit).
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

    A network that learned, then collapsed above where it started and froze there:

    >>> from losswatch.detectors.base import drive
    >>> losses = [3.1358, 2.9118, 2.9468, 3.3269, 3.3232, 3.3237, 3.3250, 3.3213]
    >>> [(a.step, a.action.type, a.action.params) for a in drive(DeadDetector(), [Record(s, x) for s, x in enumerate(losses)])]
    [(7, 'scale_lr', {'factor': 0.1})]

    References
    ----------
    runmedic (loss near ln(k) = uniform over k classes); SageMaker Debugger's "loss not
    decreasing" and "stalled training" rules; Keras and PyTorch forum threads "loss stuck at
    0.6931 / 2.3026". Corpus logs (bench/real/, provenance in bench/real/SOURCES.md):
    histories/devilmayhide__lstm-bade03_assignment__lightning-logs-version-2-metrics-csv.csv
    (weights frozen), issues/mchengny__rwf2000-video-database-for-violence-detection__19.csv
    (evaluations at chance), issues/smeetrs__deep_avsr__43.csv (collapsed).
    """

    name = "dead"
    kind = "dead"

    def __init__(self, frozen_records: int = 6, chance_records: int = 6, chance_band: float = 0.002,
                 val_chance_band: float = 0.015, collapse_records: int = 5, collapse_drop: float = 0.05,
                 lr_off: float = 0.01, blowup: float = 2.0, factor: float = 0.1, rearm: int = 3) -> None:
        super().__init__(frozen_records=frozen_records, chance_records=chance_records,
                         chance_band=chance_band, val_chance_band=val_chance_band,
                         collapse_records=collapse_records, collapse_drop=collapse_drop, lr_off=lr_off,
                         blowup=blowup, factor=factor, rearm=rearm)
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
        self.v_rec = -1  # weights frozen: the record ordinal of the last evaluation, and the
        self.v_exact = 0  # run of separate evaluations with the same six digits
        self.vc_level = -1.0  # evaluations at chance: their level, the run's length, its lowest
        self.vc_n = 0  # value and the run position of its last new low
        self.vc_low = math.inf
        self.vc_improved = 0
        self.cl_last = -1  # collapsed: nl of the last loss at or above the first one, and the
        self.cl_vals: list[float] = []  # last collapse_records of them in a row
        self.moved = 0  # records off the dead value since the episode opened

    #: state fields and their values before any record (states saved before a field existed
    #: start it afresh)
    _FRESH: ClassVar[dict[str, Any]] = {
        "fz_start": -1, "fz_last": -1, "ch_level": -1.0, "ch_start": -1, "ch_last": -1, "ch_rbest": math.inf,
        "ch_improved": -1, "v_prev": math.nan, "v_first": math.nan, "v_n": 0, "v_rec": -1, "v_exact": 0,
        "vc_level": -1.0, "vc_n": 0, "vc_low": math.inf, "vc_improved": 0, "cl_last": -1, "cl_vals": [],
        "moved": 0}

    def get_state(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self._FRESH}
        d["cl_vals"] = list(self.cl_vals)
        return d

    def set_state(self, d: dict[str, Any]) -> None:
        for k, fresh in self._FRESH.items():
            v = d.get(k, fresh)
            setattr(self, k, list(v) if isinstance(v, list) else v)

    def screen(self, f):
        with np.errstate(all="ignore"):
            x, prev = f.a("loss"), f.a("b_lprev")
            ax = np.abs(x)
            frozen = np.abs(x - prev) <= 5e-5 * ax * 1.0001 + 1e-300
            j = np.clip(np.searchsorted(CHANCE_LEVELS, x), 1, len(CHANCE_LEVELS) - 1)
            near = np.minimum(np.abs(x - CHANCE_LEVELS[j - 1]), np.abs(x - CHANCE_LEVELS[j]))
            chance = near <= self.chance_band * x * 1.0001
            above_start = x >= f.a("l0")  # the collapsed rule's records
            return (f.a("lok") & (frozen | chance | above_start)) | f.a("vok")

    def step(self, f, i: int) -> None:
        lok, vok = f.lok[i], f.vok[i]
        if not (lok or vok):
            return
        if self.alert is not None:
            self._maybe_resolve(f, i)
            return
        why = None
        if vok:
            why = self._evaluation(f, i)
        if lok:
            x, nl = f.loss[i], f.nl[i]
            frozen = nl > 1 and same_4_digits(x, f.b_lprev[i])
            lv = chance_level(x, self.chance_band)
            collapsed = self._collapsed(f, i)
            if why is None:
                why = collapsed
            if why is None and not frozen and lv is None:
                return  # nothing frozen, nothing at chance: the runs break by their record counts
            if frozen and self._zero_ok(x, f, i):
                if self.fz_last != nl - 1:
                    self.fz_start = nl - 1  # the previous record is the first of the run
                self.fz_last = nl
                n = nl - self.fz_start + 1
                if why is None and n >= self.frozen_records:
                    why = Why(f"the loss has been {fmt(x)} for {n} records in a row", x)
            if lv is not None:
                rb = f.rbest[i]
                if self.ch_last != nl - 1 or lv != self.ch_level:
                    self.ch_start, self.ch_level, self.ch_improved = nl, lv, nl
                elif rb < self.ch_rbest - 5e-5 * lv:  # a new low beyond the 4th digit
                    self.ch_improved = nl
                self.ch_rbest = rb
                self.ch_last = nl
                n = nl - self.ch_start + 1
                # a loss still making new lows is descending through ln(k), not stuck at it; one
                # whose warm-up is still raising the LR has not had its LR yet
                if why is None and n >= self.chance_records and \
                        nl - self.ch_improved >= self.chance_records // 2 and not lr_ramping(f, i):
                    why = Why(f"the loss has sat at {fmt(x)} for {n} records: ln({_CHANCE_K[lv]}) = "
                           f"{lv:.4f}, the loss of a uniform guess over {_CHANCE_K[lv]} classes", lv)
        if why is not None:
            self._open(f, i, why)

    def _evaluation(self, f, i: int) -> Why | None:
        """The rules read on an evaluation: frozen, weights frozen, evaluations at chance."""
        v, lok = f.val[i], f.lok[i]
        why = None
        self.v_n = self.v_n + 1 if same_4_digits(v, self.v_prev) and self._zero_ok(v, f, i) else 1
        # weights frozen: a record without an evaluation since the last one makes this a
        # separate evaluation, not a copy of the last one on the next training line
        apart = f.rec[i] - self.v_rec > 1
        self.v_exact = self.v_exact + 1 if apart and exact_repeat(v, self.v_prev) else 1
        self.v_prev, self.v_rec = v, f.rec[i]
        if self.v_first != self.v_first:
            self.v_first = v
        # a logger that repeats the last evaluation on every training line while the
        # training loss moves is not a frozen model; and an evaluation that converged (well
        # below where it started) prints the same 4 digits at the end of a long decay
        if self.v_n >= self.frozen_records and not (lok and not same_4_digits(f.loss[i], f.b_lprev[i])) \
                and not (self.v_first > 0.0 and v < 0.9 * self.v_first):
            why = Why(f"the validation loss has been {fmt(v)} for {self.v_n} evaluations in a row", v)
        lr, peak = f.lrlast[i], f.peak[i]
        if why is None and self.v_exact >= self.frozen_records and not (lr == lr and lr <= self.lr_off * peak):
            why = Why(f"the validation loss has been {v:.6g} for {self.v_exact} separate evaluations in a "
                      "row: the weights no longer change", v, "val_loss", 5e-7 * abs(v))
        # evaluations at chance, with the training loss at the same level
        lv = chance_level(v, self.val_chance_band)
        train = f.lprev[i]
        if lv is not None and train == train and chance_level(train, self.val_chance_band) != lv:
            lv = None
        if lv is None:
            self.vc_n = 0
            return why
        if self.vc_n == 0 or lv != self.vc_level:
            self.vc_level, self.vc_n, self.vc_low, self.vc_improved = lv, 1, v, 1
        else:
            self.vc_n += 1
            if v < self.vc_low - 5e-5 * lv:  # a new low beyond the 4th digit
                self.vc_improved = self.vc_n
            self.vc_low = min(self.vc_low, v)
        if why is None and self.vc_n >= self.chance_records and \
                self.vc_n - self.vc_improved >= self.chance_records // 2:
            k = _CHANCE_K[lv]
            why = Why(f"the validation loss has sat within {fmt(100 * self.val_chance_band)}% of ln({k}) = "
                      f"{lv:.4f} for {self.vc_n} evaluations (now {fmt(v)}, the training loss {fmt(train)}): "
                      f"the network predicts a uniform guess over {k} classes", lv, "val_loss",
                      self.val_chance_band * lv)
        return why

    def _collapsed(self, f, i: int) -> Why | None:
        """Track the losses at or above the first one; the collapsed rule's verdict on row i."""
        x, nl, l0 = f.loss[i], f.nl[i], f.l0[i]
        if not x >= l0:
            return None  # the run breaks by its record count
        if self.cl_last != nl - 1:
            self.cl_vals = []
        self.cl_last = nl
        self.cl_vals.append(x)
        del self.cl_vals[:-self.collapse_records]
        if len(self.cl_vals) < self.collapse_records or not self._lost_progress(f, i):
            return None
        lo, hi = min(self.cl_vals), max(self.cl_vals)
        if hi - lo > self.chance_band * abs(lo):
            return None
        return Why(f"the loss fell to {fmt(f.rbest[i])}, came back above where it started ({fmt(l0)}) and "
                f"has sat at {fmt(lo)}-{fmt(hi)} for {len(self.cl_vals)} records", x)

    def _lost_progress(self, f, i: int) -> bool:
        """Had the run made progress (raw best ``collapse_drop`` below a positive first loss)?"""
        l0 = f.l0[i]
        return l0 > 0.0 and f.rbest[i] <= (1.0 - self.collapse_drop) * l0

    def _zero_ok(self, x: float, f, i: int) -> bool:
        """A frozen 0 is dead only from the start or with a zero grad-norm (see the class doc)."""
        return x != 0.0 or f.l0[i] == 0.0

    def _open(self, f, i: int, why: Why) -> None:
        step, l0 = f.step[i], f.l0[i]
        text, value = why.text, why.value
        ev: dict[str, Any] = {"value": value, "first_loss": l0}
        if why.column != "loss":
            ev["watch"], ev["off"] = why.column, why.off
        if l0 == l0 and blew_up(f.worst[i], l0, self.blowup):
            ev["blew_up_to"] = f.worst[i]
            act = Action("scale_lr", {"factor": self.factor},
                         f"The network stopped learning after its loss blew up to {fmt(f.worst[i])} "
                         f"(it started at {fmt(l0)}): the LR saturated its units. Restart from a "
                         f"checkpoint before the blow-up with the LR cut {fmt(1 / self.factor)}x.")
        elif f.lok[i] and f.loss[i] >= l0 and self._lost_progress(f, i):
            ev["collapsed_from"] = f.rbest[i]
            act = Action("scale_lr", {"factor": self.factor},
                         f"The network stopped learning after it lost all its progress: the loss fell to "
                         f"{fmt(f.rbest[i])}, then came back above where it started ({fmt(l0)}), as when "
                         f"the LR saturates the units. Restart from a checkpoint before the rise with the "
                         f"LR cut {fmt(1 / self.factor)}x.")
        else:
            act = Action("stop", {}, "The network is not learning: a constant loss means a constant "
                         "output. Stop and check the data (are the labels all one class?), the loss "
                         "function and the initialisation; an LR far too high or too low does it too.")
        self.moved = 0
        self.open_episode(step, "warning", f"run is dead at step {step}: {text}", ev, act)

    def _maybe_resolve(self, f, i: int) -> None:
        assert self.alert is not None  # called while an episode is open
        ev = self.alert.evidence
        dead = ev.get("value", math.nan)
        if ev.get("watch") == "val_loss":  # an evaluation rule: the evaluations tell
            if not f.vok[i]:
                return
            x, off, what = f.val[i], ev["off"], "validation loss"
        else:
            if not f.lok[i]:
                return
            x, off, what = f.loss[i], max(2.0 * self.chance_band * abs(dead), 1e-12), "loss"
        if abs(x - dead) > off:
            self.moved += 1
            if self.moved >= self.rearm:
                self.close_episode(f.step[i], f"{what} moving again ({fmt(x)})")
                self.fz_last = self.ch_last = self.cl_last = -1
                self.v_n = self.v_exact = self.vc_n = 0
        else:
            self.moved = 0
