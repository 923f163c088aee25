"""The overfitting detector's rules, one module each.

:class:`~losswatch.detectors.overfitting.OverfittingDetector` owns the parameters, the state and
the order; each module here says one rule: its condition in words, a table of its parameters
(default, meaning and the measurement that set it), an example and references.

On each validation record, while no episode is open, the rules are tried in this order and the
first that holds raises the alert (``evidence["rule"]`` is the module's name):

1. :mod:`.held_above`: the smoothed validation loss held far above its best for several
   evaluations (long logs, noisy evaluations);
2. :mod:`.steady_rise`: the raw validation loss rose on every evaluation since its best (short
   logs evaluated once per epoch);
3. :mod:`.drift`: the raw validation loss trends up over many evaluations since its best, the
   slope far outside the evaluations' own noise (long epoch logs with a slow creep).

Shared: :mod:`.untrained` (an evaluation of the model before it trained is no best to come back
to) and :mod:`.train_loss` (a log without a training loss: the evaluations alone tell). An
episode closes when the validation loss its rule measured from (smoothed for ``held_above``, raw
for ``steady_rise`` and ``drift``) sets a new best.

The shape of a rule module: ``check(d, f, i, ...)`` returns the alert's words and evidence, or
None; ``d`` is the detector (its parameters are ``d.<name>``, its state ``d.<field>``, saved by
its ``get_state``), ``f`` the :class:`~losswatch.detectors.features.Features` and ``i`` the row.
"""
