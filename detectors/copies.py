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
have ended (a run ends when the loss changes). Until a run has ended (a network dead from its
first record) ``k`` is unknown and every line counts, as before; once a run of one line has
ended ``k`` is 1 for good and nothing more is tracked (the batch path's screen then adds no
rows). Inside a run, line ``r`` (1-based) is a new measurement when ``r - 1`` is a multiple of
``k``: a frozen network behind a copying logger still prints one value for ``k`` lines per
measurement, and its run is counted in measurements.

State on the detector ``d``: ``cp_run`` (lines in the current run of identical losses),
``cp_k`` (the divisor so far; 0: no run ended yet) and ``cp_copies`` (copies seen, so that
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
    """Every loss row up to the first that ends a run of one line (from then on ``k`` is 1);
    none once ``k`` is 1."""
    lok = f.a("lok")
    if d.cp_k == 1:
        return np.zeros(len(lok), dtype=bool)
    x, prev, prev2 = f.a("loss"), f.a("b_lprev"), f.a("b_lp2")
    with np.errstate(invalid="ignore"):
        single = lok & (f.a("nl") >= 3) & (x != prev) & (prev != prev2)
    out = lok.copy()
    if single.any():
        out[int(np.argmax(single)) + 1:] = False
    return out


def observe(d: DeadDetector, f: Features, i: int) -> bool:
    """On a loss record: extend or end the run of identical lines; is this line a copy?"""
    if d.cp_k == 1:
        return False
    if f.nl[i] > 1 and f.loss[i] == f.b_lprev[i]:
        d.cp_run += 1
    else:
        if d.cp_run:
            d.cp_k = math.gcd(d.cp_k, d.cp_run)
        d.cp_run = 1
    if d.cp_k > 1 and (d.cp_run - 1) % d.cp_k:
        d.cp_copies += 1
        return True
    return False


def measurements(d: DeadDetector, f: Features, i: int) -> int:
    """The finite losses up to row ``i`` counted as measurements (copies left out)."""
    return int(f.nl[i]) - d.cp_copies
