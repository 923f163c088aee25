"""At chance: the loss sits at ln(k), the loss of a uniform guess over k classes, and makes no
new lows: the network predicts the uniform distribution.

Condition, on a loss record: ``chance_records`` consecutive losses all within ``chance_band`` of
the same chance level ln(k) (:data:`CHANCE_CLASSES`: k classes, or a tokenizer's vocabulary),
the last half of them without a new low of the raw best (``features.rbest``) in the first four
digits (0.6931 = ln 2, 2.3026 = ln 10, 10.37 = ln 32000); or, for a run whose first loss was at
another level, ``exact_chance_records`` in a row at ln(k) itself to four significant digits (for
a run whose first loss was at chance too, where at least as many evaluations were logged, none
ever below ln(k) by more than ``val_chance_band`` and the last ``exact_chance_records``, values
of their own, within it); or
``close_chance_records`` separate measurements in a row within a quarter of ``chance_band``
of ln(k) (:data:`CLOSE`: 0.05 %, 2.3026 +- 0.0012), whatever the first loss: the output is
the uniform guess up to a rounding, and no run that learns sits that close to ln(k) that long.
A healthy loss that descends through ln(k) keeps making new lows. Not while a logged LR is still ramping up
(``features.lr_ramping``): a run at chance in its warm-up has not had its LR yet (a healthy
one-cycle CNN of the benchmark sits within 0.2% of ln 10 at steps 14-19 while its LR climbs from
1/25 of its peak); judged again once the ramp ends.

Parameters
----------
chance_records : int, default 6
    Records in a row at the level; :mod:`.evaluations_at_chance` counts its evaluations
    against it too.
exact_chance_records : int, default 3
    Records in a row at ln(k) itself (to four significant digits, :func:`is_exactly`), for a run whose
    first loss was at another level: a network does not learn its way onto the exact loss of a
    uniform output, it collapses there (a CNN whose loss goes 5.80 -> 2.3026 and prints 2.3026
    on every epoch after). Three records are that collapse at any cadence (the tune part's
    collapsed logs print 6-9; thinned to every 3rd row, 3-4); no healthy log of the tune part
    nor healthy benchmark run (seeds 0-7) prints ln(k) to four digits on even two records in a
    row. A run that starts at chance (an initialisation does) needs ``chance_records``, unless
    its evaluations, a second and separate measurement, have never left ln(k) either (their
    band, ``val_chance_band``): a Keras epoch log of a 3-class model that prints 1.0988, then
    1.0986 = ln 3 for four epochs, its validation loss 1.0974-1.1003. In the tune part's logs,
    a zero-initialised head that prints ln(k) on its first steps had not been evaluated three
    times by then, or learned before it had: no healthy log of the tune part (nor its variants)
    prints ln(k) itself on three records in a row from a first loss at chance, evaluations or
    not (a finding on those logs, not a general law). The evaluations' band and floor are
    :mod:`.evaluations_at_chance`'s ``val_chance_band``, measured there for another run. Each
    record after the first must also repeat the one before it to four significant digits
    (:func:`.frozen.same_4_digits`): a uniform output's loss is ln(k) on every batch, while a
    healthy minibatch loss with noise in its 4th digit that descends through ln(k) can land
    three records in a row within half a unit of it (a PINN's loss plus 1 wobbling
    1.0985-1.0988 on its way down, bench/healthy_variants.py).
close_chance_records : int, default 4
    Records in a row within 0.05 % of ln(k), each a value of its own (the same value again, a
    logger's copy or a frozen print, neither extends the run nor breaks it: :mod:`.frozen`
    judges prints that repeat). The short logs of a network stuck at a uniform output print
    it to 3-4 digits with a little noise in the last (Caffe's display loss creeping 6.90501,
    6.90635, 6.90681, 6.90704 towards ln 1000 = 6.90776; a Keras epoch log at 2.3030, 2.3029
    against ln 10 = 2.3026) and show 4-10 such records; no healthy log of the tune part nor
    healthy benchmark run (seeds 0-7), full or every 2nd/5th/10th/50th row, has more than 2 in a
    row (from its first record or later). An LR far too low that keeps a run at chance (the benchmark's LR /100
    runs: 3-4 records) is a stuck run too.
chance_band : float, default 0.002
    0.2% of ln(k) (2.3026 +- 0.005): a network with a constant output prints ln(k) to three
    or four digits on every record (per-epoch logs of dead CNNs: 2.3021-2.3030), while a
    healthy run that starts at chance wobbles by ~1% with its minibatches (the benchmark's
    SGD CNNs sit within 1% of ln 10 for up to 42 steps before they learn, within 0.2% for
    at most 10 records in a row, and those only at 10x their tuned LR). :mod:`.collapsed`
    bounds its constant stretch with it, and a loss episode closes once the loss is twice
    this band off the dead value.

Examples
--------
>>> from losswatch.detectors import Engine
>>> from losswatch.detectors.types import Record
>>> eng = Engine("r")
>>> losses = [0.6943, 0.6938, 0.6925, 0.6938, 0.6926, 0.6937, 0.6925, 0.6938, 0.6926]
>>> out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x))]
>>> [(a.kind, a.step, a.action.type) for a in out]
[('dead', 8, 'stop')]
>>> out[0].message
'run is dead at step 8: the loss has sat at 0.693 for 9 records: ln(2) = 0.6931, the loss of a uniform guess over 2 classes'

A run that came there from another level collapsed: three records of ln(k) itself are enough
(a log of every epoch, or every 1,000 steps, shows no more):

>>> eng = Engine("r")
>>> out = [a for s, x in enumerate([5.7976, 2.3026, 2.3026, 2.3026]) for a in eng.update(Record(s, x))]
>>> [(a.kind, a.step, a.action.type) for a in out]
[('dead', 3, 'stop')]

A short excerpt that sits within 0.05 % of ln(k) needs four values (a Caffe display loss
converging onto ln 1000 = 6.9078 from its first print):

>>> eng = Engine("r")
>>> out = [a for s, x in enumerate([6.91161, 6.90501, 6.90635, 6.90681, 6.90704])
...        for a in eng.update(Record(20 * s, x))]
>>> [(a.kind, a.step, a.action.type) for a in out]
[('dead', 80, 'stop')]

References
----------
runmedic (loss near ln(k) = uniform over k classes); Keras and PyTorch forum threads "loss
stuck at 0.6931 / 2.3026".
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..copies import each_written, measurements, new_value
from ..features import lr_ramping
from . import Why
from .frozen import new_low, same_4_digits

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features

#: Class counts whose chance-level cross-entropy ln(k) a stuck classifier sits at (binary, small
#: multi-class, CIFAR-100/ImageNet-style), and vocabulary sizes of common tokenizers (an LM that
#: predicts the uniform distribution): BERT 30522, LLaMA 32000, T5 32100, Mistral 32768, GPT-2
#: 50257/50304, RoBERTa/BART 50265, 65536, cl100k 100277, Llama-3 128256, Qwen 151936, XLM-R
#: 250002, Gemma 256000.
CHANCE_CLASSES = tuple(range(2, 11)) + (100, 1000) + (
    30522, 32000, 32100, 32768, 50257, 50265, 50304, 65536, 100277, 128256, 151936, 250002, 256000)
CHANCE_LEVELS = np.array(sorted(math.log(k) for k in CHANCE_CLASSES))
_LEVELS = CHANCE_LEVELS.tolist()  # the same, for bisect on the one-record path
CHANCE_K = {math.log(k): k for k in CHANCE_CLASSES}
#: The close band, as a share of ``chance_band``: within it ``close_chance_records`` tell
CLOSE = 0.25


def is_exactly(x: float, lv: float) -> bool:
    """``x`` is the chance level ``lv`` = ln(k) itself as far as four significant digits tell:
    within half a unit of the 4th digit (0.6931 for ln 2 = 0.693147, 2.303 for ln 10 = 2.302585,
    10.37 for ln 32000 = 10.373). A relative bar would not do: what a printed value can say
    depends on where its 4th digit falls (2.303 is 1.8e-4 from ln 10, 0.6931 only 7e-5 from ln 2)."""
    return abs(x - lv) <= 0.5 * 10.0 ** (math.floor(math.log10(lv)) - 3) * 1.0001


def chance_level(x: float, band: float) -> float | None:
    """The chance level ln(k) (of CHANCE_CLASSES) within ``band`` (relative) of ``x``, if any."""
    j = bisect.bisect_left(_LEVELS, x)
    for c in (j - 1, j):
        if 0 <= c < len(_LEVELS):
            lv = _LEVELS[c]
            if abs(x - lv) <= band * lv:
                return lv
    return None


def screen(d: DeadDetector, f: Features) -> np.ndarray:
    """The loss rows within the band of a chance level (a superset of :func:`chance_level`)."""
    x = f.a("loss")
    j = np.clip(np.searchsorted(CHANCE_LEVELS, x), 1, len(CHANCE_LEVELS) - 1)
    near = np.minimum(np.abs(x - CHANCE_LEVELS[j - 1]), np.abs(x - CHANCE_LEVELS[j]))
    return near <= d.chance_band * x * 1.0001


def observe(d: DeadDetector, f: Features, i: int) -> Why | None:
    """On a loss record: extend or break the run at a chance level; the verdict."""
    x, nl = f.loss[i], measurements(d, f, i)
    lv = chance_level(x, d.chance_band)
    if lv is None:
        return None  # the run breaks by its record count
    rb = f.rbest[i]
    exact = is_exactly(x, lv)
    close = abs(x - lv) <= CLOSE * d.chance_band * lv
    if d.ch_last != nl - 1 or lv != d.ch_level:
        d.ch_start, d.ch_level, d.ch_improved, d.ch_exact = nl, lv, nl, int(exact)
        d.ch_close = int(close)
    else:
        # the same value again is a logger's copy or a frozen print (:mod:`.frozen`'s): no
        # new measurement of the level
        d.ch_close = 0 if not close else d.ch_close + int(new_value(f, i))
        if new_low(rb, d.ch_rbest, lv):
            d.ch_improved = nl
        # a uniform output prints ln(k) itself on every record, the same digits each time; a loss
        # that wobbles in its 4th digit about ln(k) is a noisy loss passing through the level
        d.ch_exact = d.ch_exact + 1 if exact and same_4_digits(x, f.b_lprev[i]) else int(exact)
    d.ch_rbest = rb
    d.ch_last = nl
    n = nl - d.ch_start + 1
    if lr_ramping(f, i):
        return None  # a warm-up still raising the LR has not given the network its LR yet
    k = CHANCE_K[lv]
    # a loss still making new lows is descending through ln(k), not stuck at it
    if n >= d.chance_records and nl - d.ch_improved >= d.chance_records // 2:
        return Why(f"the loss has sat at {fmt(x)} for {n} records{each_written(d)}: ln({k}) = {lv:.4f}, the loss of a "
                   f"uniform guess over {k} classes", lv)
    # closer to ln(k) than a healthy run sits there: fewer records tell
    if d.ch_close >= d.close_chance_records:
        return Why(f"the loss has sat within {fmt(100 * CLOSE * d.chance_band)}% of ln({k}) = {lv:.4f}, the loss of a "
                   f"uniform guess over {k} classes, for {d.ch_close} records{each_written(d)} (now {x:.6g})", lv)
    # a run that came to exactly ln(k) from another level collapsed to a uniform output (one
    # that starts at chance, as an initialisation does, is judged by the longer run above)
    if d.ch_exact >= d.exact_chance_records and chance_level(f.l0[i], d.chance_band) != lv:
        return Why(f"the loss came from {fmt(f.l0[i])} to exactly ln({k}) = {lv:.4f}, the loss of a "
                   f"uniform guess over {k} classes, and has printed it for {d.ch_exact} records{each_written(d)}", lv)
    # a run that starts at chance and prints ln(k) itself while its evaluations, a second and
    # separate measurement, have never left ln(k) either: the output is the uniform guess on the
    # training batches and on the held-out set alike
    if d.ch_exact >= d.exact_chance_records and evaluations_at(d, f, i, lv):
        return Why(f"the loss has printed exactly ln({k}) = {lv:.4f}, the loss of a uniform guess over {k} "
                   f"classes, for {d.ch_exact} records{each_written(d)}, and its last {d.vs_n} evaluations sat "
                   f"within {fmt(100 * d.val_chance_band)}% of it (now {fmt(f.vlast[i])})", lv)
    return None


def evaluations_at(d: DeadDetector, f: Features, i: int, lv: float) -> bool:
    """Have the last ``exact_chance_records`` evaluations or more, each a value of its own, been
    within ``val_chance_band`` of ln(k) = ``lv`` (:mod:`.evaluations_at_chance` keeps that run),
    and none ever below it by more than that band?"""
    return d.vs_level == lv and d.vs_n >= d.exact_chance_records and \
        f.vbest[i] >= lv - d.val_chance_band * lv


def forget(d: DeadDetector) -> None:
    d.ch_last = -1
