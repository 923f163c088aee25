"""What corroborates a rising loss besides the data: the grad-norm building up, or the LR ramping.

A loss that rises for a few records may be noise or a run of bad batches; with a cause beside
it, fewer records and fewer noise units are evidence enough (:mod:`.streak`,
:mod:`.raw_runaway`). Two causes count:

- the *grad-norm building up*: >= ``gn_warn`` x its usual level (the EMA of log grad-norm
  before this record) on this record, and >= half that on the previous one. An explosion
  builds up over records; a bad batch's gradient jumps on its own step only, so the previous
  record is asked too (``b_glast``);
- the *LR ramping up* on this very record
  (:func:`~losswatch.detectors.features.lr_ramping`: rising, no reversal yet: a warm-up, a
  one-cycle before its peak). The loss noise grows with the LR on the way up, so noise units
  measured there come late.

And one counter-evidence, the *grad-norm calm*: logged on this record (after at least three
grad-norms) and at most ``gn_calm`` x its usual level. An optimiser that leaves its basin (an
LR too high) raises the gradient with the loss; a loss that rises under a calm gradient is the
data (harder batches, longer sequences), which the next batches undo. :mod:`.streak` does not
fire on it.

Parameters
----------
gn_warn : float, default 5.0
    How far above its usual level (a factor on the grad-norm) counts as building up.
    Set by: an RNN at 10x its LR shows its grad-norm at 5x two steps before the loss runs away;
    with it (and the spike rules), the benchmark's divergence recall went from 0.90 to 1.00.

gn_calm : float, default 1.5
    How close to its usual level (a factor on the grad-norm) counts as calm.
    Set by: a Qwen3 LoRA fine-tune's warm-up lines (loss 1.13 -> 1.57 in three records, the
    grad-norm 0.48-0.75 throughout) got a critical "cut the LR 10x"; the benchmark's streak
    alerts all come with the grad-norm >= 2x its usual (1.5 and 2.0 change no alert there).

Examples
--------
The same two rises (1.4 -> 5.8 -> 8.0 after a fast descent) are a run-away when the grad-norm
builds up under them:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [15, 13, 3.8, 2.4, 1.4, 5.8, 8.0]
>>> calm, building = [7, 6, 5, 5, 5, 5, 5], [7, 6, 5, 5, 7, 40, 70]
>>> [[a.evidence["rule"] for a in drive(DivergenceDetector(), map(Record, range(7), losses, gns))]
...  for gns in (calm, building)]
[[], ['raw_runaway']]

References
----------
ZClip (Kumar et al. 2025): a z-score on the grad-norm's own EMA statistics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features

LOG_2 = 0.6931471805599453  # half of gn_warn on the previous record: log(gn_warn) - log(2)


def grad_norm_building(d: DivergenceDetector, f: Features, i: int) -> bool:
    """Is the grad-norm >= ``gn_warn`` x its usual level on row ``i`` and >= half that on the
    record before?"""
    g = f.gn[i]
    gprev = f.b_glast[i]
    return f.gok[i] and f.ng[i] >= 3 and g > 0.0 and gprev > 0.0 and \
        math.log(g) - f.b_mu[i] >= d.gn_warn_log and \
        math.log(gprev) - f.b_mu[i] >= d.gn_warn_log - LOG_2


def grad_norm_calm(d: DivergenceDetector, f: Features, i: int) -> bool:
    """Is the grad-norm logged on row ``i`` (after three or more) and <= ``gn_calm`` x its usual
    level?"""
    g = f.gn[i]
    return f.gok[i] and f.ng[i] >= 3 and g > 0.0 and math.log(g) - f.b_mu[i] <= d.gn_calm_log
