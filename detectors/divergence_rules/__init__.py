"""The divergence detector's rules, one module each.

:class:`~losswatch.detectors.divergence.DivergenceDetector` owns the parameters, the state and
the order; each module here says one rule: its condition in words, a table of its parameters
(default, meaning and the measurement that set it), an example and references.

While no episode is open, ``step`` tries the rules on each loss record in this order, and the
first that holds raises the alert (``evidence["rule"]`` is the module's name):

1. :mod:`.first_loss`: two records in a row at 10x the first loss (needs no history);
2. :mod:`.raw_runaway`: rises to 3x the lowest loss the run held, while a fast descent is fresh;
3. :mod:`.streak`: a run of rises from a normal value, far out of the noise;
4. :mod:`.climb`: rises on many records in a row that undo much of the progress (sparse logs);
5. :mod:`.never_learnt`: the training loss only ever rose above its start, the validation loss
   with it;
6. :mod:`.spike_climbs`: the record after a counted spike is higher still;
7. :mod:`.lr_jump`: a counted spike right after the LR jumped;
8. :mod:`.spike_cluster`: the third counted spike within 50 records;
9. :mod:`.grad_norm`: a loss jump with a huge, doubling grad-norm;
10. :mod:`.sustained`: the loss level held far above its best;
11. :mod:`.lost`: stuck at the start after a blow-up.

On a record without a training loss, :mod:`.val_blowup`: the validation loss and the
grad-norm blew up together.

Rules whose check has a side effect (:mod:`.lr_jump` and :mod:`.spikes` remember LR jumps and
spikes, :mod:`.sustained` tracks the current excursion) keep it on every row the rules run on,
whichever rule fired first. While an episode is open: :mod:`.verdict` (the words and severity:
"LR too high, unstable" or "diverging / lost", and the escalation of the first to the second),
:mod:`.escalation` (a further cut when the advice was taken and did not work) and
:mod:`.recovery` (when the episode closes). Shared: :mod:`.causes` (what besides the data
corroborates a rising loss) and :mod:`.spikes` (which loss spikes the rules count).

The shape of a rule module: ``check(d, f, i, ...)`` returns ``(why, rule name)`` or None, where
``d`` is the detector (its parameters are ``d.<name>``, its state ``d.<field>``, saved by its
``get_state``), ``f`` the :class:`~losswatch.detectors.features.Features` and ``i`` the row;
the other arguments are values ``step`` already read for the row (passed, not re-read: this
is the one-record path's hot loop). ``screen(d, f)`` gives the rows of a batch where the rule
can hold or change its state, as numpy masks (a conservative superset: NaN comparisons count
as "maybe"; see :mod:`losswatch.detectors.base`).

"x times its best" is on the *progress scale* (:func:`~losswatch.detectors.progress._pratio`):
against the progress made since the first loss when that is larger than the best (half of it
for the loss level, all of it for single raw values), so a loss that went from 2.4 to 0.01 is
not "2x worse" at 0.02.
"""
