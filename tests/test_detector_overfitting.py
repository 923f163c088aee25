"""Overfitting: validation loss rising while the training loss keeps falling."""

from detector_helpers import raised, replay


def _run(val_of_step, n=1000, every=25):
    losses = [2.0 * 0.998 ** s + 0.05 for s in range(n)]
    vals = [val_of_step(s) if s % every == 0 else None for s in range(n)]
    return replay(losses, vals=vals)[1]


def test_val_rising_while_train_falls_warns_with_rollback_to_the_best_val_step():
    alerts = _run(lambda s: 1.0 - s / 1000 if s <= 400 else 0.6 + (s - 400) / 300)
    of = raised(alerts, "overfitting")
    assert len(of) == 1 and of[0].severity == "warning"
    assert of[0].action.type == "rollback" and of[0].action.params["to_step"] == 400


def test_noisy_but_flat_val_is_not_overfitting():
    noise = [0.0, 0.08, -0.05, 0.1, -0.08, 0.06, 0.0, -0.02]
    assert raised(_run(lambda s: 0.6 + noise[(s // 25) % 8]), "overfitting") == []


def test_val_rising_with_the_train_loss_is_not_overfitting():
    n = 1000
    losses = [1.0 + s / 200 for s in range(n)]
    vals = [1.0 + s / 150 if s % 25 == 0 else None for s in range(n)]
    assert raised(replay(losses, vals=vals)[1], "overfitting") == []
