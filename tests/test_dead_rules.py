"""The dead detector's rule modules: each parameter documented once, with its true default, in
the module of the rule it belongs to; every module is listed and says its rule the same way; the
rules agree between the two paths; a state saved by the detector loads and goes on alike."""

import inspect
import math
import pkgutil
import random
import re

import pytest

from detector_helpers import in_batches, one_at_a_time
from losswatch.detectors import Engine, dead_rules
from losswatch.detectors.dead import DeadDetector
from losswatch.detectors.types import Record

PARAM = re.compile(r"^(\w+) : [^,\n]+, default (\S+)", re.M)
SHARED = {"blowup", "factor", "rearm"}  # the detector's own docstring gives these (its advice)


def test_every_parameter_is_documented_once_with_its_true_default():
    found: dict[str, list[str]] = {}
    for mod in DeadDetector.rule_modules:
        table = mod.__doc__.split("Parameters\n----------\n", 1)[1].split("\nExamples\n", 1)[0]
        for name, default in PARAM.findall(table):
            found.setdefault(name, []).append(default)
    params = inspect.signature(DeadDetector.__init__).parameters
    assert sorted(found) == sorted(p for p in params if p not in SHARED | {"self"})
    for name, (written,) in found.items():
        assert float(written) == params[name].default, name
    for name in SHARED:
        assert f"``{name}`` {params[name].default:g}" in DeadDetector.__doc__


def test_every_rule_module_is_listed_and_says_its_rule_the_same_way():
    modules = {m.name for m in pkgutil.iter_modules(dead_rules.__path__)}
    assert {m.__name__.rsplit(".", 1)[1] for m in DeadDetector.rule_modules} == modules
    for mod in DeadDetector.rule_modules:
        for section in ("Parameters", "Examples", "References"):
            assert f"\n{section}\n{'-' * len(section)}\n" in mod.__doc__, (mod.__name__, section)
        assert callable(mod.forget), mod.__name__


def _runs():
    """Frozen evaluations, a frozen loss, a loss at ln 10, separate evaluations of the same float, evaluations at ln 2
    and a collapse above the first loss: each dead for a while, then moving again so that its
    episode closes."""
    recs, s = [], 0
    def add(loss, val=None):
        nonlocal s
        recs.append(Record(s, loss, val_loss=val))
        s += 1
    for _ in range(8):
        add(None, 0.2)
    for k in range(6):  # the evaluations move again: that episode closes
        add(None, 0.3 + 0.05 * k)
    for k in range(40):
        add(3.0 - 0.01 * k)
    for _ in range(10):
        add(1.2345)
    for k in range(10):
        add(2.3026 + (0.0004 if k % 2 else 0.0))
    for k in range(20):
        add(2.0 - 0.01 * k, 1.23456789 if k % 2 else None)
    for k in range(20):
        add(0.70 + 0.001 * (k % 3), 0.6955 + 0.0005 * (k % 3))
    for k in range(20):
        add(1.5 - 0.02 * k, 0.5 - 0.02 * k)
    for k in range(10):
        add(3.5 + 0.001 * (k % 5))
    for k in range(10):
        add(1.0 - 0.01 * k)
    return recs


def test_both_paths_agree_on_every_rule():
    recs = _runs()
    ref = [(a.id, a.event, a.last_step, a.message) for a in one_at_a_time(recs)[1]]
    assert sum(e[1] == "raised" for e in ref if e[3].startswith("run is dead")) == 6
    for size in (7, 64, 1000):
        got = [(a.id, a.event, a.last_step, a.message) for a in in_batches(recs, size)[1]]
        assert got == ref, size


def test_a_saved_engine_loads_and_goes_on_alike():
    recs = _runs()
    whole = [(a.id, a.event, a.last_step, a.message) for a in one_at_a_time(recs)[1] if a.kind == "dead"]
    for cut in (6, 53, 73, 93, 113, 135):
        eng, head = one_at_a_time(recs[:cut])
        eng = Engine.from_bytes(eng.to_bytes())
        tail = [a for r in recs[cut:] for a in eng.update(r)]
        got = [(a.id, a.event, a.last_step, a.message) for a in head + tail if a.kind == "dead"]
        assert got == whole, cut


def test_the_state_keeps_the_keys_that_saved_states_hold():
    # states saved in Redis before the rules moved into modules must load field by field (a saved
    # vx_rec, the evaluation record evaluations_at_chance kept apart, is v_rec's value: left out)
    assert set(DeadDetector().get_state()) == {
        "fz_start", "fz_last", "fz_xstart", "fz_xlast", "ch_level", "ch_start", "ch_last", "ch_rbest", "ch_improved", "v_prev", "v_first",
        "v_n", "v_rec", "v_exact", "vc_level", "vc_n", "vc_low", "vc_improved", "cl_last", "cl_vals", "cl_evals",
        "moved", "fs_alive", "fs_lo", "fs_hi", "fs_n", "ch_exact", "zs_alive", "vx_level", "vx_n", "v_first_step",
            "fz_xcur", "fz_xmax",
        "vp_n", "vp_train", "vb_level", "vb_n", "vb_v", "vb_fall", "vb_slow", "vb_low", "vb_since", "vb_tlow", "vb_tsince", "vs_level", "vs_n", "cp_run", "cp_k", "cp_guess",
        "cp_odd", "cp_copies", "ch_close", "fs_new"}
    old = {**DeadDetector().get_state(), "vx_rec": 4}
    del old["cp_guess"], old["cp_odd"]
    d = DeadDetector()
    d.set_state(old)
    assert (d.cp_guess, d.cp_odd) == (0, 0) and not hasattr(d, "vx_rec")


def test_frozen_evaluations_resolve_on_the_evaluations_not_the_training_loss():
    from losswatch.detectors.base import drive
    from losswatch.detectors.dead import DeadDetector
    from losswatch.detectors.types import Record
    # both frozen: the training loss differs from the frozen evaluation but did not move
    both = drive(DeadDetector(), [Record(s, 0.5123, val_loss=0.7345) for s in range(12)])
    assert [a.event for a in both] == ["raised"]
    # evaluations only: they move again, the episode closes
    recs = [Record(s, None, val_loss=0.7345) for s in range(8)] + \
        [Record(s, None, val_loss=0.3 + 0.01 * s) for s in range(8, 20)]
    assert [a.event for a in drive(DeadDetector(), recs)] == ["raised", "resolved"]


@pytest.mark.parametrize("repeats", [2, 3, 4])
def test_a_logger_that_repeats_each_loss_on_a_few_lines_is_not_a_dead_run(repeats):
    # gradient accumulation logged on every micro-step, each line carrying the last optimizer
    # step's full-precision loss: the same six digits a few lines in a row, on a healthy descent
    r = random.Random(0)
    recs = []
    for k in range(300):
        x = 2.0 + 3.0 * math.exp(-k / 60) + r.gauss(0, 0.05)
        recs += [Record(len(recs) + 1, x, lr=3e-4) for _ in range(repeats)]
    alerts = Engine("r").update_batch(recs)
    assert not [a for a in alerts if a.detector == "dead"], [a.message for a in alerts if a.detector == "dead"]


@pytest.mark.parametrize("printed", [2.303, 2.3026, 2.30259])
def test_a_collapse_onto_ln_10_is_seen_at_however_many_digits_it_is_printed(printed):
    # 2.303 is ln 10 = 2.302585 to four significant digits, though 1.8e-4 away in relative terms
    alerts = Engine("r").update_batch([Record(1, 5.7976)] + [Record(s, printed) for s in (2, 3, 4)])
    assert [(a.detector, a.step) for a in alerts if a.event == "raised"] == [("dead", 4)]


def test_a_loss_of_zero_from_the_start_is_not_told_to_raise_the_lr():
    alerts = Engine("r").update_batch([Record(s, 0.0, lr=1e-3) for s in range(1, 300)])
    assert {a.detector for a in alerts} == {"dead"}
    assert not [a for a in alerts if a.action is not None and a.action.type == "scale_lr"]


def _dead_alerts(recs):
    return [a for a in one_at_a_time(recs)[1] if a.kind == "dead"]


def test_evaluations_at_ln_k_that_slow_once_or_repeat_a_row_are_not_dead():
    # a steady learner through ln 10 whose one evaluation fell less than the others
    vals = [2.3113, 2.3099, 2.3085, 2.3071, 2.3057, 2.3050, 2.3036, 2.3022, 2.3008, 2.2994]
    recs = [Record(s, v + 0.001, val_loss=v) for s, v in enumerate(vals)]
    assert _dead_alerts(recs) == []
    # evaluations every 10 rows, each written again on the next row: a repeat is no stall
    falls = [2.3071 - 0.0004 * k for k in range(8)]
    rows = [Record(s, falls[s // 10] + 0.001 + 0.003 * (s % 7), val_loss=falls[s // 10] if s % 10 in (0, 1) else None)
            for s in range(80)]
    assert _dead_alerts(rows) == []
    assert [a.id for a in in_batches(rows, 64)[1]] == []


def test_an_export_that_forward_fills_both_columns_is_not_a_frozen_pair():
    # a per-step export: the loss logged every 5 steps, the evaluation every 50, each carried
    # forward to every row as the same float; the run learns
    rows = [Record(s, 1.23456789 - 0.00731 * (s // 5), val_loss=1.3456789 - 0.0123 * (s // 50))
            for s in range(300)]
    assert _dead_alerts(rows) == []
    assert [a.id for a in in_batches(rows, 64)[1]] == []


def test_a_pair_printed_with_three_significant_digits_is_not_frozen():
    # Keras prints four decimals: 0.0523 keeps three digits, and a floor repeats them
    assert _dead_alerts([Record(e, 0.0523, val_loss=0.0611) for e in range(1, 6)]) == []


def test_a_frozen_pair_after_the_evaluations_had_fallen_is_not_a_run_that_never_learned():
    vals = (1.0082, 0.95, 1.0082, 1.0082, 1.0082, 1.0082)
    assert _dead_alerts([Record(e, 1.0097, val_loss=v) for e, v in zip(range(1, 7), vals)]) == []
