"""slow_progress asks for a pace: a level that rises within the doubling it judges fell at no pace
the LR sets. Real logs of the corpus's tune part (bench/real/, provenance in bench/real/SOURCES.md):
the first 300 records of a healthy fine-tune whose per-step losses jump around a fast descent, and
of an LR-too-low sibling from an LR search that falls steadily. The holdout part is never read here."""

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine

# a seq2seq full fine-tune (Hugging Face Trainer, lr 1e-5, linear decay over 155,800 steps), logged
# every step: 3.71 -> 1.10 by step 128 -> 0.32 by 256 -> ~0.1 by 1,000; healthy
FINE_TUNE = "histories/adu3110__llm-project-to-build-and-fine-tune-a-large-language-model__trainer-state-json.csv"
# a 1000-step LR search, constant LR 1e-4 (Muon), 30x below the search's chosen LR: 10.82 -> 8.72
# by step 256, still falling steadily; LR too low
LR_SEARCH_LOW = "histories/vukrosic__blueberry-llm-kimi-deepseek__exp3-lr-search-results-lr-1e-04-result-json.csv"


def _raises(alerts):
    return [a for a in raised(alerts, min_severity="warning") if a.action.direction == "up"]


def test_a_fine_tune_whose_level_rises_within_the_doubling_is_not_told_to_raise_the_lr():
    # between steps 128 and 256 the level fell 1.10 -> 0.32 (h 0.30, above ratio 0.22), but in
    # the second window of the grid twice as fine (steps 152-181) it rose by 12 % of that fall:
    # per-step losses of uneven batches (32 % of their level apart) around a fast descent.
    # Before the test it was told "raise the LR x3" at step 256
    recs = tune_records(FINE_TUNE)[:300]
    assert recs[0].step == 1 and recs[-1].step == 300
    assert not [a for a in _raises(one_at_a_time(recs)[1]) if a.detector == "slow_progress"]


def test_an_lr_search_member_falling_steadily_is_still_told_to_raise_the_lr():
    # every window of 128-256 makes a share of the fall (none rises): the pace of a small LR
    up = _raises(one_at_a_time(tune_records(LR_SEARCH_LOW)[:300])[1])
    assert [(a.step, a.detector, a.action.params["factor"]) for a in up[:1]] == [(256, "slow_progress", 3.0)]


def test_the_batch_path_gives_the_same_alerts_on_the_fine_tune():
    recs = tune_records(FINE_TUNE)[:300]
    one = [(a.id, a.severity, a.last_step) for a in one_at_a_time(recs)[1]]
    eng = Engine("r")
    batch = [(a.id, a.severity, a.last_step) for a in eng.update_batch(recs)]
    assert batch == one
