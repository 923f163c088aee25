"""Dead and overfitting runs in the forms real logs take beyond the ones they were first tuned on,
on real excerpts from the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md), reshaped as a log of another cadence or with fewer columns would show
them. The holdout part is never read here."""

import random
from dataclasses import replace

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

EPOCHS = "issues/lyhue1991__eat_tensorflow2_in_30_days__69__repro.csv"  # val 0.4915 at epoch 2, then up
TRAINER = "histories/nicolassalvan__mti881-projet2__resultsetape3-trainer-state.csv"  # eval rows of their own


def _val_only(recs):
    return [replace(r, loss=None, grad_norm=None, lr=None) for r in recs if r.val_loss is not None]


def test_a_validation_loss_rising_from_its_best_is_overfitting_when_the_log_has_no_training_loss():
    for rel, best in ((EPOCHS, 2), (TRAINER, 5600)):
        recs = _val_only(tune_records(rel))
        ov = raised(one_at_a_time(recs)[1], "overfitting")
        assert len(ov) == 1, rel
        assert ov[0].action.type == "rollback" and ov[0].action.params == {"to_step": best}
        assert "no training loss logged" in ov[0].message
        assert "training loss keeps falling" not in ov[0].action.reason
        assert "no LR change" in ov[0].action.reason


def test_a_training_loss_that_is_logged_must_still_fall():
    # the same evaluations with a training loss that rises with them: not memorisation
    recs = _val_only(tune_records(EPOCHS))
    rising = [replace(r, loss=0.3 + 0.1 * k) for k, r in enumerate(recs)]
    assert raised(one_at_a_time(rising)[1], "overfitting") == []


def test_both_paths_agree_on_a_log_without_training_loss():
    recs = _val_only(tune_records(TRAINER))
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    assert ref
    for size in (1, 3, 100):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


SHIP7 = "histories/unknown__ship-cnn-jekyll-post__model-7.csv"  # 5.7976, then 2.3026 every epoch
ZERO = "issues/zai-org__glm-4__260.csv"  # loss 0.0 and grad-norm 0.0 from the first step
LSTM = "histories/devilmayhide__lstm-bade03_assignment__lightning-logs-version-2-metrics-csv.csv"


def _every(recs, k):
    return [r for j, r in enumerate(recs) if j % k == 0]


def test_a_loss_that_collapsed_onto_exactly_ln_k_is_dead_after_three_records_at_any_cadence():
    recs = tune_records(SHIP7)
    for k in (1, 3):
        dead = raised(one_at_a_time(_every(recs[:1], 1) + _every(recs[1:], k))[1], "dead")
        assert [a.action.type for a in dead] == ["stop"], k
        assert "exactly ln(10)" in dead[0].message or k == 1
    # 5.7976, then ln 10 twice: not yet; the third time (epoch 4) it is
    assert raised(one_at_a_time(recs[:3])[1], "dead") == []
    assert [a.step for a in raised(one_at_a_time(recs[:4])[1], "dead")] == [4]


def test_a_run_that_starts_at_ln_k_needs_the_longer_run():
    # an initialisation at chance (a zero-initialised head prints ln(k) itself) is not a collapse
    recs = [replace(r, step=s) for s, r in enumerate(tune_records(SHIP7)[1:])]
    assert [a.step for a in raised(one_at_a_time(recs[:5])[1], "dead")] == []
    assert raised(one_at_a_time(recs)[1], "dead")


def test_a_loss_of_exactly_zero_from_the_first_record_is_dead_on_the_second():
    recs = tune_records(ZERO)
    for k in (1, 2, 5):
        thinned = _every(recs, k)
        dead = raised(one_at_a_time(thinned)[1], "dead")
        assert [(a.step, a.action.type) for a in dead] == [(thinned[1].step, "stop")], k
        assert "exactly 0" in dead[0].message and "labels masked" in dead[0].message
        assert "check the labels" in dead[0].action.reason
    # one record is not enough, and a run that reaches 0 after learning is not judged by it
    assert raised(one_at_a_time(recs[:1])[1], "dead") == []
    learned = [replace(r, loss=x) for r, x in zip(recs, (0.9, 0.2, 0.0, 0.0, 0.0))]
    assert raised(one_at_a_time(learned)[1], "dead") == []


def test_frozen_evaluations_are_dead_in_a_log_of_evaluations_only():
    recs = _val_only(tune_records(LSTM))
    dead = raised(one_at_a_time(recs)[1], "dead")
    assert [(a.evidence["watch"], a.action.type) for a in dead] == [("val_loss", "stop")]
    assert "the weights no longer change" in dead[0].message


def test_both_paths_agree_on_the_new_dead_rules():
    for recs in (tune_records(SHIP7), tune_records(ZERO), _val_only(tune_records(LSTM))):
        ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
        assert ref
        for size in (1, 2, 5, 100):
            assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


DISCHARGE = "histories/10sajan10__cs6994finalproject__lightning-logs-discharge-version-4-metrics-csv.csv"


def test_overfitting_is_seen_when_the_best_evaluation_came_before_any_training_loss():
    # the excerpt starts at the best evaluation (step 5600), logged on a row of its own before the
    # trainer's next training line: the first training loss after it stands for its own
    recs = tune_records(TRAINER)
    start = next(j for j, r in enumerate(recs) if r.step == 5600)
    assert recs[start].loss is None and recs[start].val_loss is not None
    ov = raised(one_at_a_time(recs[start:])[1], "overfitting")
    assert [(a.evidence["rule"], a.action.params) for a in ov] == [("steady_rise", {"to_step": 5600})]


def test_an_epoch_log_cut_short_is_overfitting_on_the_training_loss_logged_with_each_epoch():
    # an epoch log from its 6th epoch: a training-loss trend of tens of records would barely move
    # over its 11 records; the epoch loss itself falls 0.296 -> 0.196 while val stays 25 % up
    recs = tune_records(DISCHARGE)[5:]
    ov = raised(one_at_a_time(recs)[1], "overfitting")
    assert [(a.evidence["rule"], a.action.type) for a in ov] == [("held_above", "rollback")]
    assert "training loss fell 0.296 -> " in ov[0].message
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    for size in (1, 4, 100):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


def test_a_validation_spike_that_is_falling_back_is_not_overfitting():
    # a benchmark run (softmax, SGD at 10x its LR, healthy by the benchmark's labels): its
    # validation loss jumps 0.83 -> 4.07 and falls back on every evaluation after; the smoothed
    # level stays above the bar for three evaluations, the evaluations themselves do not
    from pathlib import Path

    from losswatch.service.readers import read_run
    run = Path(__file__).resolve().parent.parent / "bench" / "holdout" / "runs" / "softmax-sgd-warmup_cosine-x10-s7.csv"
    recs = list(read_run(run))
    vals = [r.val_loss for r in recs if r.val_loss is not None]
    assert max(vals) > 4.0 and vals[-1] < 0.8
    assert raised(one_at_a_time(recs)[1], "overfitting") == []
    # an epoch log whose latest evaluations stay up still warns (the rule's own case)
    assert raised(one_at_a_time(tune_records(DISCHARGE))[1], "overfitting")


LRQA = "histories/yuanhuanghuang__quality__baselines-lrqa-init-py-trainer-state.csv"  # val 1.38629 = ln 4


def test_evaluations_at_ln_k_itself_are_dead_whatever_the_noisy_training_loss_does():
    recs = tune_records(LRQA)
    for k in (1, 2):
        dead = raised(one_at_a_time(_every(recs, k))[1], "dead")
        assert [(a.evidence.get("watch"), a.action.type) for a in dead] == [("val_loss", "stop")], k
        assert "ln(4) = 1.3863 itself" in dead[0].message
    # a logger that repeats one evaluation of ln(4) on every training line is one evaluation
    # (the training loss sitting at ln 4 too is the longer run's case: it says so in its words)
    first = recs[0].val_loss
    repeated = [replace(r, val_loss=first) for r in recs[:12]]
    assert not [a for a in raised(one_at_a_time(repeated[:5])[1], "dead")]
    assert not [a for a in raised(one_at_a_time(repeated)[1], "dead") if "itself" in a.message]


SGD_CNN = "histories/chanura04__dsgp-brain-tumor-detection__exp-021-custom-cnn-optim-sgd-lr-1e-2-train-val-metrics.csv"
SGD_CNN_HEALTHY = "histories/chanura04__dsgp-brain-tumor-detection__exp-028-final-custom-cnn-configuration-seed-999-train-val-metrics.csv"
GAN = "histories/0111yoyo__gan1202__training-log-csv.csv"  # healthy: the generator's loss 0.72 -> ~2
KERAS = "issues/keras-team__keras__6132.csv"  # loss 1.0097 and val_loss 1.0082 on each of 3 epochs


def _units(recs, factor=1.0, shift=0.0):
    """The same log in other units: each loss x factor + shift (a summed loss, a constant term)."""
    def moved(x):
        return None if x is None else x * factor + shift
    return [replace(r, loss=moved(r.loss), val_loss=moved(r.val_loss)) for r in recs]


def test_a_loss_that_rose_from_its_start_and_froze_above_it_is_dead_with_an_lr_cut():
    # SGD at 10x its LR: 0.723 -> 0.943 -> 1.068-1.070 on every epoch after, its validation loss
    # 0.708 -> 1.0768-1.0785 with it (val accuracy pinned at the majority class); in any units
    recs = tune_records(SGD_CNN)
    for variant in (recs, _units(recs, 10.0), _units(recs, 0.1), _units(recs, 1.0, 5.0)):
        dead = raised(one_at_a_time(variant)[1], "dead")
        assert [(a.step, a.action.type, a.action.params) for a in dead] == [(6, "scale_lr", {"factor": 0.1})]
        assert "rose from" in dead[0].message and "for 5 records" in dead[0].message
        assert "rose from" in dead[0].action.reason and "LR cut 10x" in dead[0].action.reason
        assert "rose_from" in dead[0].evidence
    assert "rose from 0.723 to 1.07," in raised(one_at_a_time(recs)[1], "dead")[0].action.reason
    # four frozen epochs are not enough yet
    assert raised(one_at_a_time(recs[:6])[1], "dead") == []
    # the same team's healthy run (its loss falls from its first epoch) is not dead
    assert raised(one_at_a_time(tune_records(SGD_CNN_HEALTHY))[1], "dead") == []


def test_a_rise_without_evaluations_that_froze_with_it_gets_no_lr_advice():
    # the training loss alone rising and levelling off is what healthy runs print too (below);
    # the CNN's validation loss is its evidence: without it, or with one that still moves, no
    # LR cut
    recs = tune_records(SGD_CNN)
    moving = [replace(r, val_loss=r.val_loss * (1.0 + 0.015 * (k % 3))) for k, r in enumerate(recs)]
    for variant in ([replace(r, val_loss=None) for r in recs], moving):
        assert [a for a in raised(one_at_a_time(variant)[1], "dead") if a.action.type == "scale_lr"] == []


def _loss_only(xs):
    return [Record(s, x) for s, x in enumerate(xs)]


def _smoothed(recs, a):
    """A logger's exponential moving average of the loss (s = a*s + (1-a)*x), four decimals."""
    s, out = recs[0].loss, []
    for r in recs:
        s = a * s + (1.0 - a) * r.loss
        out.append(Record(r.step, round(s, 4)))
    return out


def _keras_running_mean(seed, batches=300, epochs=2):
    """A Keras per-batch log: the running mean of the epoch's batch losses (a converged model at
    ~0.40, batch noise 20 %), reset at each epoch."""
    rng, xs = random.Random(seed), []
    for e in range(epochs):
        total = 0.0
        for b in range(batches):
            total += (0.40 - 0.00002 * (e * batches + b)) * (1.0 + 0.2 * rng.gauss(0.0, 1.0))
            xs.append(round(total / (b + 1), 4))
    return xs


def test_healthy_losses_that_rise_and_level_off_are_not_dead():
    healthy = {
        "GAN generator epoch means": [0.693, 1.21, 1.85, 2.31, 2.52, 2.61, 2.655, 2.661, 2.659, 2.664, 2.660,
                                      2.662, 2.658, 2.663],
        "GAN generator, four digits": [0.6931, 0.9, 1.4, 2.0, 2.2, 2.25, 2.27, 2.268, 2.271, 2.269, 2.270, 2.272],
        "VAE, KL annealed": [101.2, 98.0, 104.5, 110.3, 113.9, 115.2, 115.4, 115.35, 115.3, 115.28, 115.25, 115.22],
        "auxiliary loss switched on": [1.00, 0.97, 0.96, 0.955, 1.25, 1.24, 1.2402, 1.2400, 1.2401, 1.2399, 1.2400],
        "fine-tune from a lucky first batch": [1.40, 1.62, 1.58, 1.55, 1.53, 1.5310, 1.5305, 1.5303, 1.5302,
                                               1.5301, 1.5301],
        "near zero": [0.0500, 0.0490, 0.0480, 0.0505, 0.0520, 0.05201, 0.05203, 0.05202, 0.05200, 0.05201],
    }
    healthy.update({f"Keras running mean, seed {seed}": _keras_running_mean(seed) for seed in range(2, 12)})
    gan = [r for r in tune_records(GAN) if r.loss is not None]
    runs = {name: _loss_only(xs) for name, xs in healthy.items()}
    runs.update({f"GAN log smoothed {a}": _smoothed(gan, a) for a in (0.95, 0.98, 0.99)})
    for name, recs in runs.items():
        dead = raised(one_at_a_time(recs)[1], "dead")
        assert not [a for a in dead if "rose from" in a.message or "rose_from" in a.evidence], name


def test_an_evaluation_verdict_keeps_its_own_advice_on_a_loss_that_rose():
    # evaluations at ln 2 itself (a uniform guess) while the noisy training loss sits ~9 % above
    # its first 0.66: the evaluations' verdict and its advice (stop, check the data), not an LR
    # cut read off one training loss that no rule found frozen
    losses = [0.66, 0.64] + [0.72 + 0.004 * ((k * 7) % 5 - 2) for k in range(12)]
    vals = [None, None] + [0.69314 + 0.00001 * (k % 3 - 1) for k in range(12)]
    recs = [Record(s, x, None, None, v) for s, (x, v) in enumerate(zip(losses, vals))]
    dead = raised(one_at_a_time(recs)[1], "dead")
    assert [(a.step, a.action.type) for a in dead] == [(5, "stop")]
    assert "uniform guess" in dead[0].message and "rose_from" not in dead[0].evidence


def test_a_frozen_level_only_just_above_the_best_is_not_a_rise():
    # 2 % above the start and its best: within what a converged run's level does
    recs = [replace(r, loss=x) for r, x in zip(tune_records(SGD_CNN), [1.0] + [1.02 + 1e-4 * (k % 2) for k in range(14)])]
    assert raised(one_at_a_time(recs)[1], "dead") == []


def test_a_frozen_pair_is_dead_in_other_units():
    # Keras' four-decimal prints in other units carry a fifth decimal or a float's rounding
    # (0.10097, 6.0097000000000005): still a rounded print that repeats, not a float an export
    # forward-filled
    recs = tune_records(KERAS)
    for factor, shift in ((1.0, 0.0), (0.1, 0.0), (10.0, 0.0), (1.0, 5.0)):
        dead = raised(one_at_a_time(_units(recs, factor, shift))[1], "dead")
        assert [(a.step, a.action.type) for a in dead] == [(3, "stop")], (factor, shift)
    # a full-precision float that repeats is still an export's copy (the run's own prints move)
    for factor, copy in ((0.1, 0.1009712345678), (100.0, 100.9712345678)):
        copied = [replace(r, loss=copy) for r in _units(recs, factor)]
        assert raised(one_at_a_time(copied)[1], "dead") == [], factor


def test_both_paths_agree_on_a_loss_that_rose_and_froze():
    recs = tune_records(SGD_CNN)
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    assert ref
    for size in (1, 2, 5, 100):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


def test_a_saved_engine_goes_on_alike_inside_a_frozen_rise():
    # the evaluations the frozen losses saw are state: saved and loaded at every record
    from losswatch.detectors import Engine
    recs = tune_records(SGD_CNN)
    whole = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    for cut in range(1, 10):
        eng, head = one_at_a_time(recs[:cut])
        eng = Engine.from_bytes(eng.to_bytes())
        tail = [a for r in recs[cut:] for a in eng.update(r)]
        assert [(a.id, a.event, a.message) for a in head + tail] == whole, cut


def test_noisy_evaluations_close_to_the_training_loss_that_rise_three_times_are_not_overfitting():
    # a healthy benchmark linear regression (Adam at its tuned LR, seed 1 of the tuning seeds):
    # its evaluations reach 0.5557 at step 300, then rise on each of the four after (0.5587, 0.5703,
    # 0.5713, 0.5885: 6 % of the best) close to its noisy training loss: evaluation noise. Measured against the best's height above the
    # training loss it would read as memorisation
    from pathlib import Path

    from losswatch.service.readers import read_run
    run = Path(__file__).resolve().parent.parent / "bench" / "runs" / "linreg-adam-constant-x1-s1.csv"
    recs = list(read_run(run))
    vals = [r.val_loss for r in recs if r.val_loss is not None]
    assert vals[-5] == min(vals) and vals[-5] < vals[-4] < vals[-3] < vals[-2] < vals[-1]  # rises after the best
    assert raised(one_at_a_time(recs)[1], "overfitting") == []
