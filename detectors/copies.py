"""Lines a logger writes more than once: the dead rules count measurements, not log lines.

Some loggers print their last values on several lines: a GAN trainer that writes the
discriminator's and the generator's line with the same running loss, a Trainer callback that
logs at every optimizer step what it measured once per accumulation. Each value then stands on
``k`` lines in a row, bit for bit. The dead rules count records in a row at one value
(:mod:`.dead_rules.frozen`, :mod:`.dead_rules.at_chance`, :mod:`.dead_rules.collapsed`,
:mod:`.dead_rules.flat_start`); counted in lines,
two measurements that agree to four digits would look like ``2k`` frozen records.

What tells the logger's copies from a frozen network, which prints one value on every line too,
is the log's own pattern while the loss moves: a logger that writes every measurement ``k``
times leaves runs of identical lines whose lengths are all multiples of ``k``; a logger that
writes each measurement once leaves runs of one line as soon as the loss moves. So ``k`` is
the greatest common divisor of the lengths of the runs of bit-identical training losses that
have ended (a run ends when the loss changes), with two exceptions:

- the first run in view is left out: an excerpt, or a log whose first lines were lost, may
  begin in the middle of a run, so its length is only a guess at ``k``, used until a run is
  counted (a copying logger's first lines are then not counted one by one) and then dropped;
- a run that would lower ``k`` (a line the logger dropped, or one it wrote once more) waits:
  ``k`` is lowered only when the next run lowers it too. A log that writes each value once
  leaves runs of one line in a row as soon as its loss moves; one odd run is not that. A first
  counted run of one line waits too, and the next run folds in with it (a log printed to four
  digits repeats a value now and then: a run of one line and then one of two is ``k`` 1).

Until a run has ended (a network dead from its first record) ``k`` is unknown and every
line counts, evaluations too: three epochs that print the same loss and validation loss are a
dead network's whole log as often as a copying logger's first lines, and nothing in them tells
the two apart. Once ``k`` is 1 it stays 1 and nothing more is tracked (the batch path's screen
then adds no rows). Inside a run, line ``r`` (1-based) is a new measurement when ``r - 1`` is a multiple of
``k``: a frozen network behind a copying logger still prints one value for ``k`` lines per
measurement, and its run is counted in measurements.

Only the training loss tells copies: a log of evaluations only is read line by line.

State on the detector ``d``: ``cp_run`` (lines in the current run of identical losses),
``cp_k`` (the divisor so far; 0: no run counted yet), ``cp_guess`` (the length of the first
run in view, the divisor until a run is counted; 0: that run has not ended), ``cp_odd`` (the
length of a run that would lower ``k``, waiting for the next one; 0: none) and ``cp_copies`` (copies seen, so that
``f.nl[i] - d.cp_copies`` is the measurement count the rules key their runs on).

Example: a loss that moves, written four times per value, is not frozen at 0.6931 after two
measurements that agree to four digits:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> values = [0.7203, 0.7451, 0.6931, 0.69312, 0.7608, 0.8113]
>>> lines = [v for v in values for _ in range(4)]
>>> drive(DeadDetector(), [Record(s, x) for s, x in enumerate(lines)])
[]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .dead import DeadDetector
    from .features import Features


def screen(d: DeadDetector, f: Features) -> np.ndarray:
    """Every loss row up to the first that ends the second of two runs of one line in a row, the
    first run in view aside (from then on ``k`` is 1); none once ``k`` is 1."""
    lok = f.a("lok")
    if d.cp_k == 1:
        return np.zeros(len(lok), dtype=bool)
    rows = np.flatnonzero(lok)
    x, prev, prev2 = f.a("loss")[rows], f.a("b_lprev")[rows], f.a("b_lp2")[rows]
    ended = np.zeros(len(rows), dtype=bool)
    if len(rows) > 1:
        # the loss three lines back: the one two back of the line before (unknown on the
        # batch's first loss row, which then ends nothing: the screen errs towards more rows)
        with np.errstate(invalid="ignore"):
            ended[1:] = (f.a("nl")[rows[1:]] >= 4) & (x[1:] != prev[1:]) & (prev[1:] != prev2[1:]) \
                & (prev2[1:] != prev2[:-1])
    out = lok.copy()
    if ended.any():
        out[rows[int(np.argmax(ended))] + 1:] = False
    return out


def _run_ended(d: DeadDetector, length: int) -> None:
    """Fold the length of a run that ended (not the first in view) into ``k``."""
    g = math.gcd(d.cp_k, length)
    if g == d.cp_k:  # a multiple of k
        d.cp_odd = 0
    elif d.cp_odd:  # the second run in a row that lowers k (or the second counted, k unknown)
        d.cp_k, d.cp_odd = math.gcd(g, d.cp_odd), 0
    elif d.cp_k == 0 and g > 1:  # the first run counted gives k
        d.cp_k = g
    else:  # one run that lowers k: a dropped or doubled line, until the next one says otherwise
        d.cp_odd = length


def observe(d: DeadDetector, f: Features, i: int) -> bool:
    """On a loss record: extend or end the run of identical lines; is this line a copy?"""
    if d.cp_k == 1:
        return False
    if f.nl[i] > 1 and not new_value(f, i):
        d.cp_run += 1
    else:
        if d.cp_run and f.nl[i] - d.cp_run > 1:
            _run_ended(d, d.cp_run)
        elif d.cp_run:  # the run began on the first loss in view (nl - cp_run is 1)
            d.cp_guess = d.cp_run
        d.cp_run = 1
    k = d.cp_k or d.cp_guess
    if k > 1 and (d.cp_run - 1) % k:
        d.cp_copies += 1
        return True
    return False


def each_written(d: DeadDetector) -> str:
    """The words an alert adds to a count of measurements when each is written on several lines."""
    k = d.cp_k or d.cp_guess
    return f", each written {k} times" if k > 1 else ""


def new_value(f: Features, i: int) -> bool:
    """Is the loss on row ``i`` a value of its own: not the same as the line before, which is a
    logger's copy or a frozen print either way (the first loss in view is: NaN before it)? The
    rules that need values that differ (the close bands of :mod:`.dead_rules.at_chance` and
    :mod:`.dead_rules.flat_start`) count these; :func:`measurements` counts a frozen print."""
    return bool(f.loss[i] != f.b_lprev[i])


def measurements(d: DeadDetector, f: Features, i: int) -> int:
    """The finite losses up to row ``i`` counted as measurements (copies left out)."""
    return int(f.nl[i]) - d.cp_copies
