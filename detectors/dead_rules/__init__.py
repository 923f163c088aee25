"""The dead detector's rules, one module each: a network that stopped learning (its loss is
frozen, or sits at chance level).

:class:`~losswatch.detectors.dead.DeadDetector` owns the parameters, the state, the order, the
advice and the resolution; each module here says one rule: its condition in words, a table of its
parameters (default, meaning and the measurement that set it), an example and references.

Every rule sees every record (its runs are keyed on record counts, so a record that breaks a run
must reach it) but the lines a logger wrote again: :mod:`~losswatch.detectors.copies` counts the
loss records as measurements (``copies.measurements``; the training loss tells the copies, so
a log of evaluations only is read line by line); while no episode is open, the first
verdict in this order raises the alert:

1. on an evaluation: :mod:`.frozen` (the validation loss the same to four significant digits),
   :mod:`.weights_frozen` (separate evaluations the same to six), :mod:`.evaluations_at_chance`
   (evaluations at ln(k) with the training loss there too);
2. on a loss record: :mod:`.zero_start` (exactly 0 from the first record), :mod:`.collapsed`
   (constant at or above the first loss, well above a loss the run already reached),
   :mod:`.frozen` (the loss the same to four significant digits; to six on three records
   at or above the first loss once it moved), :mod:`.at_chance` (the loss
   at ln(k) without new lows, or within 0.05 % of it), :mod:`.flat_start` (every loss since the first within a 0.2 %
   band, or five values within 0.1 %: a warning without an action, the evidence of a few records being thin).

The shape of a rule module: ``observe(d, f, i)`` (``evaluation(d, f, i, prev)`` for the rules
read on an evaluation, ``prev`` the previous finite validation loss) keeps the rule's run and
returns a :class:`Why`, or None; ``forget(d)`` breaks the run once an episode closed; ``screen(d,
f)`` (the loss rules) marks the rows the rule must see. ``d`` is the detector (its parameters are
``d.<name>``, its state ``d.<field>``, saved by its ``get_state``), ``f`` the
:class:`~losswatch.detectors.features.Features` and ``i`` the row.
"""

from __future__ import annotations

from typing import NamedTuple


class Why(NamedTuple):
    """What a rule saw: the alert's words, the dead value, and what the episode watches to
    resolve (the column, and how far off the value a record must be: None, the chance band);
    ``sure`` False where the evidence is too thin for an action (a warning to check the data);
    ``checks`` the rule's own words for what to check when it stops the run (None: the
    detector's, for a constant output); ``rose`` True where the loss rose from its start and
    froze at ``value`` (:mod:`.collapsed`: the units saturated, the advice is an LR cut)."""

    text: str
    value: float
    column: str = "loss"
    off: float | None = None
    sure: bool = True
    checks: str | None = None
    rose: bool = False
