"""The oscillation detector's rules, one module each: "LR too high: unstable", a loss that the LR
keeps from settling although the run is not lost.

:class:`~losswatch.detectors.oscillation.OscillationDetector` owns the parameters, the state and
the order; each module here says one rule: its condition in words, a table of its parameters
(default, meaning and the measurement that set it), an example and references.

On each loss record, while no episode is open, the rules are tried in this order and the first
that holds raises the alert (``evidence["rule"]`` is the module's name):

1. :mod:`.zigzag`: the loss changes direction on nearly every record with large swings and no
   progress (period-2 oscillation across a valley);
2. :mod:`.relapse`: the loss went back up after the LR was raised (a warm-up into a too-high
   peak) and holds above the best it reached at the lower LR;
3. :mod:`.held_back`: the loss made no progress for a doubling of the step at a high LR and
   fell once the schedule lowered the LR (the peak LR held the descent back).

All three advise ``scale_lr`` x``factor`` (a warning: the run is unstable, not lost; a run that is
lost is the divergence detector's). Each rule says when its episode closes.

The shape of a rule module: ``check(d, f, i)`` returns the alert's words, evidence and the reason
of its advice, or None; ``resolved(d, f, i)`` returns the note that closes its episode, or None; ``d`` is the detector
(its parameters are ``d.<name>``, its state ``d.<field>``, saved by its ``get_state``), ``f`` the
:class:`~losswatch.detectors.features.Features` and ``i`` the row.
"""
