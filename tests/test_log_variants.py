"""bench/log_variants.py: which variants of a labelled log keep its class, and what they keep.

Pure functions on hand-made rows; the replay itself is bench/variants.py's (a benchmark, run by
hand). bench/ is not a package: its modules are loaded from their files.
"""

from __future__ import annotations

import pytest

from detector_helpers import load_bench_script

lv = load_bench_script("log_variants")
FIELDS = ["step", "loss", "grad_norm", "lr", "val_loss"]


def log(n=100, every_val=10, grad=True):
    rows = []
    for i in range(n):
        rows.append({"step": str(i * 10), "loss": repr(3.0 - i / n), "grad_norm": "1.0" if grad else "",
                     "lr": "0.001", "val_loss": repr(3.1 - i / n) if i % every_val == 0 else ""})
    return rows


def steps(variant):
    return [int(r["step"]) for r in variant[1]]


def test_thinning_keeps_a_problem_logs_onset_rows_and_a_healthy_log_plain():
    rows = log()
    div = lv.variants(FIELDS, rows, "divergence", 473)  # onset row: step 480, row 48
    assert {480, 490, 500, 510} <= set(steps(div["thin5"]))
    assert set(steps(div["thin5"])) == set(range(0, 1000, 50)) | {480, 490, 500, 510}
    healthy = lv.variants(FIELDS, rows, "healthy", 0)
    assert steps(healthy["thin5"]) == list(range(0, 1000, 50))


def test_a_cut_stops_short_of_the_onset_and_of_the_best_evaluation_before_an_overfit():
    rows = log()
    div = lv.variants(FIELDS, rows, "divergence", 200)  # onset row 20: at most 15 rows cut
    assert steps(div["last80pct"])[0] == 150
    assert "last50pct" not in div  # the same cut again
    assert steps(lv.variants(FIELDS, rows, "healthy", 0)["last50pct"])[0] == 500
    for r in rows[61:]:  # the validation loss rises after its best at row 60
        if r["val_loss"]:
            r["val_loss"] = repr(float(r["val_loss"]) + 1.0)
    over = lv.variants(FIELDS, rows, "overfitting", 800)
    assert steps(over["last50pct"])[0] == 500
    assert steps(over["last80pct"])[0] == 200
    rows[60]["val_loss"] = ""  # best evaluation now at row 50
    assert steps(lv.variants(FIELDS, rows, "overfitting", 800)["last50pct"])[0] == 500


def test_a_variant_without_the_column_the_failure_shows_in_is_skipped():
    rows = log()
    over = lv.variants(FIELDS, rows, "overfitting", 500)
    assert "no_val_loss" not in over and "loss_only" not in over and "val_only" in over
    div = lv.variants(FIELDS, rows, "divergence", 500)
    assert "no_val_loss" in div and "loss_only" in div and "val_only" not in div
    for r in rows[50:]:  # the blow-up shows in the evaluations only
        if r["val_loss"]:
            r["val_loss"] = repr(float(r["val_loss"]) * 10)
    div = lv.variants(FIELDS, rows, "divergence", 500)
    assert "no_val_loss" not in div and "loss_only" not in div and "val_only" in div
    rows[52]["loss"] = "nan"  # now in the training loss too
    div = lv.variants(FIELDS, rows, "divergence", 500)
    assert {"no_val_loss", "loss_only", "val_only"} <= set(div)


def test_a_nan_log_keeps_the_column_that_holds_its_non_finite_value():
    rows = log()
    for r in rows[50:]:  # the grad-norm overflows while the loss stays finite and creeps up
        r["grad_norm"] = "nan"
        r["loss"] = repr(float(r["loss"]) + 0.5)
    nan = lv.variants(FIELDS, rows, "nan", 500)
    assert "no_grad_norm" not in nan and "loss_only" not in nan and "no_lr" in nan
    rows[51]["loss"] = "nan"  # now in the training loss too: either column shows it
    nan = lv.variants(FIELDS, rows, "nan", 500)
    assert {"no_grad_norm", "loss_only"} <= set(nan) and "val_only" not in nan


def test_an_excerpt_that_ends_before_the_onset_rows_is_skipped():
    rows = log()
    assert "first8" not in lv.variants(FIELDS, rows, "spike", 50)  # onset rows 5-8
    assert "first15" in lv.variants(FIELDS, rows, "spike", 50)
    assert "first8" in lv.variants(FIELDS, rows, "healthy", 0)


def test_step_column_x10_moves_the_onset_and_needs_integer_steps():
    rows = log()
    v = lv.variants(FIELDS, rows, "divergence", 473)["stepx10"]
    assert steps(v)[:2] == [0, 100] and v[2] == 4730
    rows[3]["step"] = "30.5"
    assert "stepx10" not in lv.variants(FIELDS, rows, "divergence", 473)


def test_a_variant_equal_to_the_log_is_skipped_and_the_rows_are_left_alone():
    rows = log(grad=False)
    before = [dict(r) for r in rows]
    vs = lv.variants(FIELDS, rows, "healthy", 0)
    assert "no_grad_norm" not in vs
    assert float(vs["lossx10"][1][0]["loss"]) == pytest.approx(30.0)
    assert vs["loss+1"][1][0]["val_loss"] == repr(4.1)
    assert rows == before


def test_evaluations_and_records_are_thinned_apart():
    rows = log(every_val=5)
    vs = lv.variants(FIELDS, rows, "healthy", 0)
    assert sum(1 for r in vs["thin_val2"][1] if r["val_loss"]) == 10
    assert len(vs["thin_val2"][1]) == 100
    kept = vs["thin_loss2"][1]
    assert len(kept) == 50 + 10  # every 2nd record and the odd-row evaluations too
    assert sum(1 for r in kept if r["val_loss"]) == 20


def test_the_replay_tool_refuses_holdout_files():
    tool = load_bench_script("variants")
    part_of = tool.part_of
    name = next(f"issues/x{i}.csv" for i in range(100) if part_of(f"issues/x{i}.csv") == "holdout")
    with pytest.raises(ValueError, match="holdout"):
        tool.read_log(name)


def test_thinning_keeps_evaluations_on_rows_of_their_own_as_evaluations():
    # a Trainer's log history: a training loss every row, an evaluation on a row of its own
    # every 55 rows (54, 109, ...): every 10th row would keep none of them
    rows = []
    for i in range(550):
        ev = i % 55 == 54
        rows.append({"step": str(10 * i), "loss": "" if ev else repr(2.0 - i / 1000),
                     "grad_norm": "", "lr": "", "val_loss": repr(1.5 - i / 2000) if ev else ""})
    thin = lv.variants(FIELDS, rows, "healthy", 0)["thin10"][1]
    assert sum(bool(r["val_loss"]) for r in thin) == 10
    assert sum(bool(r["loss"]) for r in thin) == 55  # one training loss per 10 rows
    # a training loss and an evaluation on every row (an epoch table): every 10th row
    both = log(every_val=1)
    assert steps(lv.variants(FIELDS, both, "healthy", 0)["thin10"]) == list(range(0, 1000, 100))


def test_a_value_no_stream_keeps_is_blanked_in_a_copy_and_a_problem_logs_onset_rows_stay_whole():
    # the training loss every 5th row, an evaluation every row (a Lightning epoch log): the grid
    # is 10 training-loss intervals, 50 steps, for both streams
    rows = [{"step": str(i), "loss": "1.0" if i % 5 == 4 else "", "grad_norm": "", "lr": "",
             "val_loss": repr(1.0 + i / 1000)} for i in range(300)]
    before = [dict(r) for r in rows]
    thin = lv.thin_streams(rows, 10, keep={150, 151})
    assert rows == before  # the given rows are never changed
    losses = [int(r["step"]) for r in thin if r["loss"]]
    assert losses[:3] == [4, 54, 104]  # every 10th training loss
    assert [int(r["step"]) for r in thin if r["val_loss"]][:3] == [0, 50, 100]
    assert all(not (r["loss"] and r["val_loss"]) for r in thin if int(r["step"]) not in (150, 151))
    assert [r for r in thin if int(r["step"]) in (150, 151)] == [rows[150], rows[151]]


def test_rows_written_k_times_keep_each_row_and_its_onset():
    rows = log(n=20)
    div = lv.variants(FIELDS, rows, "divergence", 100)  # onset row 10
    same = div["rows_x4"]
    assert steps(same) == [s for s in range(0, 200, 10) for _ in range(4)] and same[2] == 100
    assert [r["loss"] for r in same[1][:4]] == [rows[0]["loss"]] * 4
    ahead = div["rows_x2_steps"]  # the step column x2, each row's copy on the next step
    assert steps(ahead)[:4] == [0, 1, 20, 21] and ahead[2] == 200
    assert [r["val_loss"] for r in ahead[1][:2]] == [rows[0]["val_loss"]] * 2
    assert rows[0]["step"] == "0" and len(rows) == 20  # the rows given are not changed
    epochs = [dict(r, step=str(int(r["step"]) / 4)) for r in rows]  # non-integer steps
    assert "rows_x2_steps" not in lv.variants(FIELDS, epochs, "healthy", 0)
    assert "rows_x2" in lv.variants(FIELDS, epochs, "healthy", 0)


def test_an_evaluation_written_on_the_training_losss_line_stays_on_it():
    # a training loss every 10 steps from step 10, an evaluation on its line every 100 steps
    # (the CS336 sweep's metrics): a grid per stream, started at each stream's first value,
    # kept the loss at 10, 110, 210 and the evaluations at 100, 200 alone
    rows = [{"step": str(s), "loss": repr(3.0 - s / 5000), "grad_norm": "0.5", "lr": "0.001",
             "val_loss": repr(3.1 - s / 5000) if s % 100 == 0 else ""} for s in range(10, 2010, 10)]
    for k in (2, 3, 5, 10):
        thin = lv.thin_streams(rows, k)
        evals = [r for r in thin if r["val_loss"]]
        assert len(evals) == 20, k  # every evaluation (one every 10 intervals)
        # on the loss's line where the coarser loss falls on their step (k divides 10); at k 3
        # the loss is logged at 90 and 120, the evaluation at 100 alone, as a logger writes it
        together = [r for r in evals if r["loss"]]
        assert len(together) == (20 if 10 % k == 0 else 6), k  # k 3: 300, 600, ..., 1800
        assert all(r["grad_norm"] and r["lr"] for r in together), k
    assert [int(r["step"]) for r in lv.thin_streams(rows, 10)][:3] == [10, 100, 200]


def test_an_evaluation_kept_alone_takes_the_training_losss_columns_off_its_line():
    # a training loss every step, an evaluation on its line every 7th step: at k 10 the grid keeps
    # the loss at steps 0, 10, 20, ... and the evaluations at 0, 14, 21, 35, ..., 70 (on the loss's line), ...
    rows = [{"step": str(s), "loss": "2.0", "grad_norm": "0.5", "lr": "0.001",
             "val_loss": "2.1" if s % 7 == 0 else ""} for s in range(100)]
    thin = lv.thin_streams(rows, 10)
    alone = [r for r in thin if r["val_loss"] and not r["loss"]]
    assert [int(r["step"]) for r in alone] == [14, 21, 35, 42, 56, 63, 84, 91]
    assert all(r["grad_norm"] == "" and r["lr"] == "" for r in alone)
    assert [int(r["step"]) for r in thin if r["loss"]] == list(range(0, 100, 10))
    assert all(r["grad_norm"] == "0.5" and r["lr"] == "0.001" for r in thin if r["loss"])


def test_a_log_of_evaluations_only_or_of_epochs_is_thinned_on_its_own_interval():
    # no training loss: the grid is the evaluations' interval (every 50 steps, from step 50)
    evals = [{"step": str(s), "loss": "", "grad_norm": "", "lr": "", "val_loss": "1.0"} for s in range(50, 5050, 50)]
    assert [int(r["step"]) for r in lv.thin_streams(evals, 10)][:3] == [50, 500, 1000]
    # an epoch table numbered from 1: one row in 10
    epochs = [{"step": str(e), "loss": "1.0", "grad_norm": "", "lr": "", "val_loss": "1.1"} for e in range(1, 41)]
    assert [int(r["step"]) for r in lv.thin_streams(epochs, 10)] == [1, 10, 20, 30, 40]
