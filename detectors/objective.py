"""What the logged loss is to training: the run metadata's ``objective``.

Most detectors read the loss as a quantity training drives down towards a floor: a rise away from
its best is a divergence, a loss that stops falling is a plateau or an LR too small, a validation
loss that turns up is overfitting. That reading is wrong for two common kinds of run, and no
statistic of the loss alone tells them from a sick supervised run:

- ``adversarial``: a GAN's generator (or discriminator) loss. It starts near ln 2 and climbs,
  swinging from batch to batch, as the discriminator learns: a WaveGAN generator's loss
  0.7 -> 1-6.6 over 20 healthy epochs, read as "loss diverging, 1.85x its best, cut the LR 10x".
- ``reinforcement``: a policy-gradient or value loss. It grows with the returns it is fitted to,
  spikes on every new kind of episode and never settles on a floor (a healthy GAIL-PPO run's loss
  8.9 -> 53 in its first ten records, read as "LR too high").

Declared, only the detectors whose facts hold whatever the loss means stay on: non-finite values
(``nan``), the gradient's explosion, and the LR's own anomalies and schedule (each detector says
which it is: ``Detector.judges_descent``). The others stay off for the run, among them the
vanishing gradient (it asks the loss to have stopped improving) and the dead run (a loss at ln 2
is a GAN's equilibrium, not a network at chance). Two that stay take other parameters
(``OTHER_PARAMS``): ``nan`` rolls back to the last finite step, never to the step of the loss's
best (a rise before the NaN is no run-away here), and ``grad_explosion`` reports an explosion on a
step where the loss jumped too (it leaves those to the spike detector, off here).
``minimised`` (the default, also when the key is absent or null) keeps every detector.

Example
-------
>>> from losswatch.detectors import Engine
>>> from losswatch.detectors.types import Record
>>> gan = [0.69, 0.72, 1.4, 2.9, 1.1, 4.8, 2.2, 6.1, 3.0, 5.5]
>>> read_as_minimised = Engine("g")
>>> [(a.kind, a.severity) for r in map(Record, range(10), gan) for a in read_as_minimised.update(r)
...  if a.event == "raised"]
[('spike', 'info'), ('divergence', 'critical')]
>>> declared = Engine("g", {"objective": "adversarial"})
>>> [a.kind for r in map(Record, range(10), gan) for a in declared.update(r)]
[]
>>> [a.kind for a in declared.update(Record(10, float("nan")))]
['nan']
"""

from __future__ import annotations

# standard library only, and not even typing at run time: the client checks a run's metadata
# with it without numpy (annotations are strings, PEP 563)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

#: The values ``meta["objective"]`` may take; the first is the default.
OBJECTIVES = ("minimised", "adversarial", "reinforcement")
DEFAULT = OBJECTIVES[0]

#: Parameters a detector that stays on takes for another objective (the run's own overrides win).
#: ``grad_explosion`` leaves a gradient that explodes on the step the loss jumps to the spike
#: detector, one alert per incident; that detector is off here, and a GAN's loss jumps on most
#: steps, so the explosion is reported whatever the loss did. ``nan`` rolls back to the loss's
#: best step when the last finite loss was ``ran_away`` x above it (a run that blew up before it
#: overflowed); a GAN's or an RL loss sits far above its best by design.
OTHER_PARAMS = {"grad_explosion": {"loss_spike": float("inf")}, "nan": {"ran_away": float("inf")}}


def objective_of(meta: Mapping[str, Any] | None) -> str:
    """The run's objective from its metadata: ``meta["objective"]``, or the default when it is
    absent or null. Any other value is a ValueError that names the allowed ones (the service
    answers it with a 422, ``losswatch replay --meta`` with an error; the engine reads it as the
    default, with a warning, since bad metadata must not stop monitoring)."""
    value = (meta or {}).get("objective")
    if value is None:
        return DEFAULT
    if value not in OBJECTIVES:
        raise ValueError(f"unknown objective {value!r}: expected one of {', '.join(OBJECTIVES)}")
    return value


def params_for(name: str, objective: str) -> dict[str, Any]:
    """The parameters the objective sets for the detector called ``name`` (none for the default)."""
    return {} if objective == DEFAULT else dict(OTHER_PARAMS.get(name, {}))


def applies(cls: type, objective: str) -> bool:
    """Does a detector class run for a run of this objective? All do for a minimised loss; only
    those that do not judge the loss's descent for the others."""
    return objective == DEFAULT or not getattr(cls, "judges_descent", True)
