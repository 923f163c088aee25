"""LR too high, seen without a logged LR: the oscillation rule ``relapse`` on a training loss that
falls, climbs back by half its progress and stays there while the evaluations get worse. A verbatim
excerpt of the tune part of the real corpus (bench/real/, provenance in bench/real/SOURCES.md); the
holdout part is never read here."""

from detector_helpers import one_at_a_time, raised
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

# bench/real/histories/div__xiamishaonian111__cs336__lr-sweep-1e-1-metrics.csv (xiamishaonian111/cs336
# assignment1-basics/experiments/lr_sweep_1e-1/metrics.jsonl, records of steps 10-610): a CS336 LR
# sweep's run at peak LR 0.1; the loss falls 5.17 -> 4.09 during the warm-up, then climbs back as
# the LR passes the edge of stability and stays at ~4.6-4.8; the author: 1e-1 is not stable. The
# LR column (logged in the file) is left out here: many committed sweeps log the loss alone.
STEPS = list(range(10, 620, 10))
LOSS = [
    5.168088912963867, 5.06803035736084, 5.45601749420166, 5.069257736206055, 4.564095497131348,
    4.444235801696777, 4.349851608276367, 4.249422550201416, 4.0873188972473145,
    4.186638832092285, 4.152019500732422, 4.4299516677856445, 4.365167617797852,
    4.413190841674805, 4.32357120513916, 4.432440280914307, 4.554414749145508,
    4.661354064941406, 4.585033416748047, 4.629859447479248, 4.559543609619141,
    4.521757125854492, 4.558035850524902, 4.622086524963379, 4.560763835906982,
    4.716207981109619, 4.581487655639648, 4.585605144500732, 4.6645636558532715,
    4.748356819152832, 4.642414093017578, 4.475571632385254, 4.8092241287231445,
    4.541013717651367, 4.61832332611084, 4.657373428344727, 4.735088348388672,
    4.585111618041992, 4.596479415893555, 4.674015045166016, 4.60300350189209,
    4.581169128417969, 4.6762309074401855, 4.713940620422363, 4.604434490203857,
    4.742125034332275, 4.779394149780273, 4.687112808227539, 4.847692489624023,
    4.746415615081787, 4.72796630859375, 4.827797889709473, 4.810137748718262,
    4.6290693283081055, 4.828600883483887, 4.814229965209961, 4.710177898406982,
    4.8786773681640625, 4.814682960510254, 4.867828845977783, 4.780147552490234
]
VAL = [  # (step, val_loss), every 100 steps
    (100, 4.1720301628112795), (200, 4.597200059890747), (300, 4.57514443397522), (400,
    4.598863554000855), (500, 4.69991626739502), (600, 4.895195817947387)
]


def _records(val=True):
    v = dict(VAL) if val else {}
    return [Record(s, x, None, None, v.get(s)) for s, x in zip(STEPS, LOSS)]


def _batch(recs):
    eng = Engine("r")
    eng.SMALL_BATCH = 0  # force the vectorised path
    return eng.update_batch(list(recs))


def _relapses(alerts):
    return [(a.step, a.action.type, a.action.params.get("factor")) for a in raised(alerts, "oscillation", "warning")
            if a.evidence.get("rule") == "relapse"]


def test_a_loss_that_gives_back_half_its_progress_with_worse_evaluations_gets_an_lr_cut_without_an_lr_column():
    recs = _records()
    alerts = one_at_a_time(recs)[1]
    assert _relapses(alerts) == [(600, "scale_lr", 0.3)]
    assert "given back" in raised(alerts, "oscillation", "warning")[0].message
    assert _relapses(_batch(recs)) == _relapses(alerts)


def test_without_evaluations_the_loss_alone_is_not_read():
    # a loss that rises from an early low and holds there may be a GAN's or a curriculum's
    # objective: the held-out loss must say the model got worse
    assert _relapses(one_at_a_time(_records(val=False))[1]) == []


def test_an_excerpt_is_not_read():
    # the same rows from step 200 on: the first loss is not the run's start
    recs = [r for r in _records() if r.step >= 200]
    assert _relapses(one_at_a_time(recs)[1]) == []
