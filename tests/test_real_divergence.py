"""The loss level and the divergence rules on real log excerpts from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md). The holdout part is never read here."""

import csv
import sys
from pathlib import Path

import pytest

from detector_helpers import raised
from losswatch.detectors import Engine
from losswatch.detectors.features import FeatureTracker
from losswatch.detectors.types import Record
from losswatch.service.readers import read_run

BENCH = Path(__file__).resolve().parent.parent / "bench"
REAL = BENCH / "real"
sys.path.insert(0, str(REAL))
sys.path.insert(0, str(BENCH))
from split import part_of  # noqa: E402

from real_logs import thin_rows  # noqa: E402

PINN = "histories/macro1027__simple-pendulum-pinn__lightning-logs-version-31-metrics-csv.csv"


def _path(rel: str, tmp_path: Path, thin_onset: int | None = None) -> Path:
    """The tune file, or its copy thinned as bench/real_logs.py thins it (each stream every
    10th row, the onset row and the 3 after it)."""
    assert part_of(rel) == "tune", f"{rel} is in the untouched holdout part"
    if thin_onset is None:
        return REAL / rel
    with open(REAL / rel, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    out = tmp_path / Path(rel).name
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(thin_rows(rows, thin_onset))
    return out


def _replay(path: Path, batch: bool = False):
    eng = Engine("r")
    if batch:
        eng.SMALL_BATCH = 0  # force the vectorised path
        return eng.update_batch(list(read_run(path)))
    return [a for rec in read_run(path) for a in eng.update(rec)]


# -- the loss level follows a fast descent ---------------------------------------------------------

def test_a_pinns_surge_after_its_fast_descent_is_seen_in_a_log_thinned_to_every_10th_epoch(tmp_path):
    # 123.7 at epoch 0, 4.2 at epoch 10: the EMA level still remembered the untrained loss (25,
    # with a noise of 40) when the loss surged 1.7 -> 2.7 -> 4.6 -> 10.8 over epochs 150-153
    alerts = _replay(_path(PINN, tmp_path, thin_onset=151))
    spikes = raised(alerts, "spike")
    assert spikes and 151 <= spikes[0].step <= 153
    assert spikes[0].evidence["level"] < 5.0  # measured against where the loss was, not 25
    assert not raised(alerts, "divergence")  # it came back: a spike, no LR cut


@pytest.mark.parametrize("batch", [False, True])
def test_the_same_surge_is_a_spike_in_a_log_of_every_5th_epoch_once_the_level_caught_up(tmp_path, batch):
    # every 5th epoch: by epoch 150 the level (1.9) has caught up with the loss (1.1-1.7) but
    # its noise (1.4) still holds the descent from 124, while the loss's second differences say
    # 0.3; the surge 1.7 -> 2.7 -> 4.6 -> 10.8 was 5.8 noise units up against the first
    with open(REAL / PINN, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    kept = [r for i, r in enumerate(rows) if i % 5 == 0 or 151 <= float(r["step"]) <= 154]
    path = tmp_path / "every5.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(kept)
    alerts = _replay(path, batch=batch)
    spikes = raised(alerts, "spike")
    assert spikes and 151 <= spikes[0].step <= 153
    assert spikes[0].evidence["noise"] < 1.0
    assert not raised(alerts, "divergence")


def test_the_level_re_anchors_after_two_records_below_its_noise_band_not_after_one():
    ft = FeatureTracker()
    rows = [ft.advance_one(s, x, None, None, None) for s, x in enumerate([123.7, 4.22, 2.05])]
    assert rows[1].slow[0] > 100.0  # one low record may be a lucky batch: the level waits
    assert rows[2].slow[0] <= 4.22  # held low for two records: the level follows
    assert rows[2].sd[0] < 1.0  # and the descent does not count as noise
    # noise around a level (and a lucky low batch within it) moves the level by its EMA only
    plateau = FeatureTracker()
    xs = [2.0, 2.1, 1.9, 2.05, 1.95, 1.7, 2.0, 2.02]
    levels = [plateau.advance_one(s, x, None, None, None).slow[0] for s, x in enumerate(xs)]
    for k in range(1, len(xs)):
        assert levels[k] == pytest.approx(levels[k - 1] + 0.1 * (xs[k] - levels[k - 1]))


@pytest.mark.parametrize("thin", [False, True])
def test_the_batch_path_gives_the_same_alerts_after_a_fast_descent(tmp_path, thin):
    path = _path(PINN, tmp_path, thin_onset=151 if thin else None)
    one = [(a.id, a.kind, a.severity, a.step, a.last_step) for a in _replay(path)]
    assert one == [(a.id, a.kind, a.severity, a.step, a.last_step) for a in _replay(path, batch=True)]


# -- slow climb ------------------------------------------------------------------------------------

LAMCO = "histories/lamco-admin__lamcogaussianimage__baseline1-divergence-finding.csv"


def test_a_fit_that_climbs_on_every_logged_iteration_after_its_best_is_a_slow_divergence(tmp_path):
    # Adam at a constant LR: best 0.0712 at iteration 1500, then 0.0754, 0.0818, 0.0861, 0.0989,
    # 0.157 at the iterations the note lists; no record is far out of the noise and the level
    # never stays high for 10 records in a 14-row log
    alerts = _replay(_path(LAMCO, tmp_path))
    div = raised(alerts, "divergence", "warning")
    assert div and div[0].step == 3000 and div[0].evidence["rule"] == "climb"
    assert div[0].severity == "warning"  # still below its first loss (0.245): not lost
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1
    assert div == raised(_replay(_path(LAMCO, tmp_path), batch=True), "divergence", "warning")


@pytest.mark.parametrize("climb_z, caught", [(0.0, True), (5.0, False)])
def test_noise_that_rises_five_records_in_a_row_is_no_climb(climb_z, caught):
    # a very noisy per-step loss (+-40 %) that rises five records in a row by chance, 0.6 -> 1.3:
    # 2x its start, but only ~1.5 of its usual record-to-record changes
    xs = [1.4, 0.6, 1.2, 0.7, 1.3, 0.8] * 5 + [0.6, 0.7, 0.8, 0.95, 1.1, 1.3] + [1.4, 0.6, 1.2, 0.7] * 3
    eng = Engine("r", params={"divergence": {"climb_z": climb_z}})
    alerts = [a for s, x in enumerate(xs) for a in eng.update(Record(s, x))]
    assert bool(raised(alerts, "divergence")) is caught


def test_a_climb_the_lr_schedule_explains_is_no_divergence():
    # a cyclic LR on its way up (after two reversals) raises the loss by design
    lrs = [0.1 - 0.01 * k for k in range(10)] + [0.01 + 0.01 * k for k in range(10)] + \
        [0.1 - 0.01 * k for k in range(10)] + [0.01 + 0.01 * k for k in range(8)]
    xs = [2.0 - 0.05 * k for k in range(30)] + [0.55 + 0.1 * k for k in range(8)]
    eng = Engine("r")
    alerts = [a for s, (x, lr) in enumerate(zip(xs, lrs)) for a in eng.update(Record(s, x, lr=lr))]
    assert not [a for a in raised(alerts, "divergence") if a.evidence["rule"] == "climb"]


# -- one record past 10x the first loss, confirmed by the validation loss ------------------------

def test_a_blow_up_on_the_last_epoch_shown_is_a_divergence_when_the_validation_loss_blew_up_too(tmp_path):
    # LadderNet: train 0.16 -> 1.6e18 and validation 3.05 -> 1.9e7 on epoch 4, the last line of
    # the thread; one record past 10x the first loss alone could be a bad batch
    alerts = _replay(_path("issues/juntang-zhuang__laddernet__1.csv", tmp_path))
    div = raised(alerts, "divergence", "critical")
    assert div and div[0].step == 4 and div[0].evidence["rule"] == "first_loss"
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1
    assert "validation loss" in div[0].message


def test_one_record_past_10x_the_first_loss_with_a_calm_validation_loss_waits_for_the_next():
    losses, vals = [0.35, 0.22, 0.18, 0.16, 1.6e3, 0.17], [5.1, 3.3, 3.2, 3.0, 3.1, 3.0]
    eng = Engine("r")
    alerts = [a for s, (x, v) in enumerate(zip(losses, vals)) for a in eng.update(Record(s, x, val_loss=v))]
    assert not raised(alerts, "divergence")


def test_the_first_and_last_validation_loss_are_the_same_in_both_paths():
    from losswatch.detectors.batch import Batch
    vals = [None, 5.0, None, float("nan"), 4.0, None, 3.5]
    one = FeatureTracker()
    rows = [one.advance_one(s, 1.0, None, None, v) for s, v in enumerate(vals)]
    batch = FeatureTracker().advance_batch(Batch.from_columns(step=list(range(7)), loss=[1.0] * 7, val_loss=vals))
    for col in ("v0", "vlast"):  # str(): NaN before the first one compares equal
        assert str([r.columns()[col][0] for r in rows]) == str(batch.a(col).tolist())
    assert str(batch.a("v0").tolist()) == str([float("nan")] + [5.0] * 6)
    assert batch.a("vlast").tolist()[-1] == 3.5


# -- a log without a training loss ----------------------------------------------------------------

def test_a_results_table_with_only_the_validation_error_and_the_grad_norm_shows_the_divergence(tmp_path):
    # DrivAerML surrogate: validation error ~9-11 %, then 31.7 % with the grad-norm 0.5 -> 4.2
    # ('the model never recovers'); no training loss is in the table
    alerts = _replay(_path("issues/wandb__senpai__pr2761.csv", tmp_path))
    div = raised(alerts, "divergence", "critical")
    assert div and div[0].step == 88 and div[0].evidence["rule"] == "val_blowup"
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1
    assert div == raised(_replay(_path("issues/wandb__senpai__pr2761.csv", tmp_path), batch=True),
                         "divergence", "critical")


@pytest.mark.parametrize("vals, gns", [
    ([10.2, 8.9, 11.2, 31.7], [0.48, 0.45, 0.51, 0.52]),  # the validation loss alone: a bad evaluation
    ([10.2, 8.9, 11.2, 11.7], [0.48, 0.45, 0.51, 4.24]),  # the grad-norm alone: a bad batch, clipped
])
def test_the_validation_loss_or_the_grad_norm_alone_is_no_divergence(vals, gns):
    eng = Engine("r")
    alerts = [a for s, (v, g) in enumerate(zip(vals, gns)) for a in eng.update(Record(s, None, g, None, v))]
    assert not raised(alerts, "divergence")


# -- an excerpt's first loss is not where training started ---------------------------------------

PINN_SPIKE = "histories/macro1027__simple-pendulum-pinn__lightning-logs-version-23-metrics-csv.csv"


def _excerpt(rel: str, tmp_path: Path, first: int, last: int) -> Path:
    """The tune file's rows with first <= step <= last: a log that begins mid-run."""
    assert part_of(rel) == "tune", f"{rel} is in the untouched holdout part"
    with open(REAL / rel, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [r for r in reader if first <= float(r["step"]) <= last]
    out = tmp_path / f"excerpt-{Path(rel).name}"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return out


@pytest.mark.parametrize("batch", [False, True])
def test_a_spike_in_an_excerpt_that_climbs_past_its_first_loss_is_not_a_lost_run(tmp_path, batch):
    # a PINN's loss at 1.5-1.9 over epochs 89-93, then 3.3, 7.2, 7.5 and back to 3.9, 3.0, 2.5,
    # 2.1 (a transient spike). The excerpt's first loss, 1.69, is one draw of a run that began at
    # 124: a loss and level above it have not undone what the run learnt, and the warning of the
    # jump that rose again must not turn into "everything it learnt is undone, roll back"
    alerts = _replay(_excerpt(PINN_SPIKE, tmp_path, 89, 110), batch=batch)
    assert raised(alerts, "spike")
    div = [a for a in alerts if a.kind == "divergence"]
    assert div and all(a.severity == "warning" for a in div)


# -- ten times the first loss, again ----------------------------------------------------------------

MMDET = "issues/open-mmlab__mmdetection__4299.csv"


@pytest.mark.parametrize("shift", [0.0, 5.0])
@pytest.mark.parametrize("batch", [False, True])
def test_a_blow_up_that_swings_back_under_ten_times_the_first_loss_and_over_it_again_is_caught(tmp_path, shift, batch):
    # a detector at lr 0.02: 1.44, 2.97, 212, 41.2, 4,421. With a constant of 5 in the logged
    # loss (a regulariser's term) the first loss is 6.44 and 41.2 + 5 is only 7x it: the second
    # record over 10x is two records after the first, not the next one
    assert part_of(MMDET) == "tune"
    with open(REAL / MMDET, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [dict(r, loss=repr(float(r["loss"]) + shift)) for r in reader]
    path = tmp_path / "mmdet.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    div = raised(_replay(path, batch=batch), "divergence", "warning")
    assert div and div[0].step <= 656 and div[0].action.params["factor"] < 1


def _feed(losses: list[float], batch: bool):
    eng = Engine("r")
    recs = [Record(s, x) for s, x in enumerate(losses)]
    if batch:
        eng.SMALL_BATCH = 0  # force the vectorised path
        return eng.update_batch(recs)
    return [a for rec in recs for a in eng.update(rec)]


@pytest.mark.parametrize("batch", [False, True])
def test_two_separate_bad_batches_over_ten_times_the_first_loss_two_records_apart_are_no_lost_run(batch):
    # a fine-tune starting at 0.05, with two bad batches (0.7, 0.65: 14x and 13x its first loss)
    # two records apart and the loss back at its level between them: nothing blew up
    losses = [0.05 - 0.01 * min(s, 100) / 100 + 0.003 * ((s * 7) % 5 - 2) / 2 for s in range(200)]
    losses[150], losses[152] = 0.7, 0.65
    div = raised(_feed(losses, batch), "divergence")
    assert not [a for a in div if a.severity == "critical"]


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize(("between", "lost"), [(1.8, False), (6.2, False), (6.4, True), (46.2, True)])
def test_over_ten_times_the_first_loss_again_two_records_later_is_lost_only_if_it_stayed_up_between(batch, between, lost):
    # first loss 2: 40 and 45 are 20x and 22x it; the record between them decides: back at the
    # level (1.8) or below sqrt(10) x 2 = 6.32 it came down (two bad batches), at or above it the
    # blow-up swung and never came down
    losses = [2.0, 1.9, 1.8, 40.0, between, 45.0, 1.7, 1.75]
    crit = [a for a in raised(_feed(losses, batch), "divergence")
            if a.severity == "critical" and a.evidence["rule"] == "first_loss"]
    assert bool(crit) == lost
    if lost:
        assert crit[0].step == (4 if between >= 20.0 else 5)
