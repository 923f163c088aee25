"""The oscillation detector's rule modules: each parameter documented once, with its true
default, in the module of the rule it belongs to; both rules agree between the two paths."""

import inspect
import pkgutil
import random
import re

from detector_helpers import in_batches, one_at_a_time
from losswatch.detectors import oscillation_rules
from losswatch.detectors.oscillation import OscillationDetector
from losswatch.detectors.types import Record

PARAM = re.compile(r"^(\w+) : [^,\n]+, default (\S+)", re.M)
SHARED = {"min_records", "factor"}  # the detector's own docstring gives these two


def test_every_parameter_is_documented_once_with_its_true_default():
    found: dict[str, list[str]] = {}
    for mod in OscillationDetector.rule_modules:
        table = mod.__doc__.split("Parameters\n----------\n", 1)[1].split("\nExamples\n", 1)[0]
        for name, default in PARAM.findall(table):
            found.setdefault(name, []).append(default)
    params = inspect.signature(OscillationDetector.__init__).parameters
    assert sorted(found) == sorted(p for p in params if p not in SHARED | {"self"})
    for name, (written,) in found.items():
        assert float(written) == params[name].default, name
    for name in SHARED:
        assert f"``{name}`` {params[name].default:g}" in OscillationDetector.__doc__


def test_every_rule_module_is_listed_in_the_detector():
    modules = {m.name for m in pkgutil.iter_modules(oscillation_rules.__path__)}
    assert {m.__name__.rsplit(".", 1)[1] for m in OscillationDetector.rule_modules} == modules


def test_both_paths_agree_on_a_relapse_and_a_zig_zag():
    r = random.Random(11)
    recs = []
    for s in range(10, 4000, 10):
        lr = min(0.1, 0.1 * s / 250)
        loss = 5.2 - 0.012 * s if s <= 90 else min(4.8, 4.1 + 0.006 * (s - 90))
        if s > 3000:
            loss = 3.0 + (0.4 if (s // 10) % 2 else 0.0)  # a clean period-2 zig-zag at the end
        recs.append(Record(s, loss + r.gauss(0, 0.05), lr=lr))
    ref = [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in one_at_a_time(recs)[1]]
    assert {e[3] for e in ref} >= {"relapse", "zigzag"}
    for size in (17, 64, 1000):
        got = [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in in_batches(recs, size)[1]]
        assert got == ref, size


def test_a_relapse_closed_by_a_new_best_at_the_high_lr_says_so():
    # the LR stays at its peak (0.1) while the loss finds a new best: the episode closes on the new
    # best, not with "LR back down" (the LR never came down)
    import random

    from losswatch.detectors.base import drive
    from losswatch.detectors.oscillation import OscillationDetector
    from losswatch.detectors.types import Record
    r = random.Random(0)

    def loss(s):
        if s >= 2000:
            return 3.9
        return 5.2 - 0.012 * s if s <= 90 else min(4.8, 4.1 + 0.006 * (s - 90))

    recs = [Record(s, loss(s) + r.gauss(0, 0.05), lr=min(0.1, 0.0004 * s)) for s in range(10, 2100, 10)]
    out = drive(OscillationDetector(), recs)
    assert [a.event for a in out] == ["raised", "resolved"]
    assert out[1].evidence["resolution"].startswith("a new best") and out[1].resolved_step == 2010
