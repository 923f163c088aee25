"""Divergence detector: catches run-aways early, from few points, and leaves spikes alone."""

import math
import random

from detector_helpers import healthy_curve, in_batches, raised, replay

# BLOOM chronicles excerpts (bigscience-workshop/bigscience, see shared/data/public-logs):
# (step, lm loss, grad norm)
BLOOM_104B_EXP2 = [(6900, 6.365808, 95313.572), (6910, 6.598378, 84678.880),
                   (6920, 7.314456, 122716.232), (6930, 9.121927, 283384.130),
                   (6940, 10.23865, 42359.376)]
BLOOM_104B_EXP1 = [(7000, 6.444662, 98258.265), (7010, 11.42026, 219645.978),
                   (7220, 7.155109, 16921.991)]
BLOOM_104B_EXP12 = [(8738, 3.317482, 231817.368), (8739, 3.417051, 89608.482),
                    (8740, 3.682950, 1490753.218), (8741, 7.267764, 3273877.676),
                    (8742, 4.130868, 1839649.510), (8743, 7.596509, 1369067.435),
                    (9026, 7.024580, 20609.780)]
BLOOM_176B_SPIKE = [(31214, 2.198845, 0.242), (31215, 2.220424, 0.947), (31216, 2.595213, 2.390),
                    (31217, 2.241558, 15.886), (31218, 2.345279, 145.119),
                    (31219, 5.098124, 960.351), (31220, 3.492029, 353.201),
                    (31221, 3.213059, 379.330), (31222, 2.804948, 650.246),
                    (31250, 2.215699, 0.267), (31251, 2.235667, 0.205)]
BLOOM_104B_EMBNORM_SPIKE = [(17060 + k, x, g) for k, (x, g) in enumerate([
    (2.665295, 453082.517), (2.667121, 464441.887), (4.374269, 464441.887), (4.365822, 464441.887),
    (4.391485, 464441.887), (4.404639, 464441.887), (4.398458, 879946.622),
    (4.096038, 879946.622), (4.137348, 879946.622)])]
BLOOM_13B_SPIKE = [(29020 + 10 * k, x, 0.0) for k, x in enumerate(
    [2.775923, 2.772822, 2.768131, 7.343709, 8.715872, 7.654131, 7.192470, 6.849044])]


def _bloom(rows):
    steps, losses, gns = zip(*rows)
    return replay(list(losses), gns=list(gns), lrs=[6e-5] * len(rows), steps=list(steps))[1]


def test_practitioner_example_fires_before_the_nan_with_lr_times_0_1():
    _, alerts = replay([2.5, 2.4, 2.6, 3.1, 4.2, math.nan])
    div = raised(alerts, "divergence")
    assert [a.step for a in div] == [4]
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] == 0.1
    assert "4.2" in div[0].message and "best" in div[0].message


def test_every_bloom_104b_divergence_is_caught_from_a_few_points():
    assert [a.step for a in raised(_bloom(BLOOM_104B_EXP2), "divergence")] == [6930]  # before 10.2
    assert [a.step for a in raised(_bloom(BLOOM_104B_EXP1), "divergence")] == [7010]
    assert [a.step for a in raised(_bloom(BLOOM_104B_EXP12), "divergence")] == [8741]


def test_self_recovering_bloom_spikes_get_no_lr_action():
    for rows in (BLOOM_176B_SPIKE, BLOOM_104B_EMBNORM_SPIKE, BLOOM_13B_SPIKE):
        alerts = _bloom(rows)
        lr_actions = [a for a in raised(alerts, min_severity="warning") if a.action.type == "scale_lr"]
        assert lr_actions == [], [a.message for a in lr_actions]


def test_one_step_data_spikes_in_a_healthy_run_are_not_divergence():
    losses, gns, lrs = healthy_curve(3000, seed=1)
    for s in (918, 946, 1759):  # the GPT-2 speedrun's data spikes: +40% for one step
        losses[s] *= 1.4
    _, alerts = replay(losses, gns, lrs)
    assert raised(alerts, "divergence") == []
    assert {a.step for a in raised(alerts, "spike")} == {918, 946, 1759}


def test_dense_slow_divergence_is_caught_by_the_sustained_rule_and_resolves():
    losses, gns, lrs = healthy_curve(1200, seed=2, tau=100)
    for s in range(600, 800):  # the loss climbs back to ~3x its best, then recovers
        losses[s] *= 1.0 + 2.0 * min(1.0, (s - 600) / 60)
    _, alerts = replay(losses, gns, lrs)
    div = raised(alerts, "divergence")
    assert len(div) == 1 and 600 < div[0].step < 700
    assert any(a.kind == "divergence" and a.resolved_step for a in alerts)


def test_cyclic_lr_raising_the_loss_is_not_divergence_when_gentle():
    # triangular CLR: on a decaying curve, the loss rises with the LR by up to +60%, every 200 steps
    n = 2000
    lrs = [0.01 + 0.09 * (1 - abs((s % 200) / 100 - 1)) for s in range(n)]
    losses = [(0.3 + 2.0 * math.exp(-s / 300)) * (1.0 + 0.6 * (lr - 0.01) / 0.09)
              for s, lr in enumerate(lrs)]
    _, alerts = replay(losses, lrs=lrs)
    assert raised(alerts, "divergence") == []


def test_exploding_run_with_grad_norm_fires_within_two_rises():
    losses = [0.85, 10.2, 478.0, 1.2e4, 2.6e5]
    gns = [1.84, 15.0, 78.6, 442.0, 1690.0]
    _, alerts = replay(losses, gns, [1.0] * 5)
    div = raised(alerts, "divergence")
    # 10.2 then 478: twice over 10x the first loss, a fact that needs no history
    assert [a.step for a in div] == [2] and div[0].evidence["rule"] == "first_loss"


def test_spike_right_after_an_lr_jump_is_divergence():
    losses, gns, lrs = healthy_curve(400, seed=3)
    lrs = [0.05] * 300 + [1.0] * 100
    losses[301] = 2.5  # ~8x the level, one step after the LR went 20x up
    _, alerts = replay(losses, gns, lrs)
    div = raised(alerts, "divergence")
    assert div and div[0].step == 301 and div[0].evidence["rule"] == "lr_jump"


def _cut_run(cut: bool, recovers: bool, n: int = 120):
    """A healthy descent that blows up from step 60 (alerted at step 75); from step 80 the LR is
    cut 10x (or not) and the loss recovers (or thrashes on, high and noisy)."""
    import random

    r = random.Random(3)
    losses, gns, lrs = healthy_curve(60, seed=4, tau=20)
    losses += [losses[-1] * k for k in (1.3, 1.8, 2.6, 3.8, 5.5)]
    lrs += [1e-3] * 5
    for s in range(65, n):
        lrs.append(1e-4 if cut and s >= 80 else 1e-3)
        base = 0.35 if recovers and s >= 80 else 2.2
        losses.append(base * (1.0 + r.gauss(0, 0.05 if recovers else 0.3)))
    gns += [1.0] * (n - len(gns))
    return losses, gns, lrs


def _escalations(alerts):
    return [a for a in alerts if a.kind == "divergence" and a.evidence.get("escalation")]


def test_a_cut_that_does_not_stop_the_divergence_escalates_the_same_alert():
    losses, gns, lrs = _cut_run(cut=True, recovers=False)
    _, alerts = replay(losses, gns, lrs)
    div = raised(alerts, "divergence")
    assert len(div) == 1
    esc = _escalations(alerts)
    # once, after the settling window at the lower LR, on the same alert, with a further cut
    assert len(esc) == 1 and esc[0].id == div[0].id
    assert esc[0].last_step >= 80 + 30 and esc[0].evidence["escalation"] == 1
    assert esc[0].action.type == "scale_lr" and esc[0].action.params["factor"] == 0.1
    # the same action once more is a new request to the user: an escalation, not an update
    assert esc[0].event == "escalated"
    # the restart point stays the last good step before the episode, not a step inside it
    assert esc[0].evidence["best_step"] == div[0].evidence["best_step"] < div[0].step


def test_no_escalation_when_the_cut_works_or_was_not_made():
    for cut, recovers in ((True, True), (False, False)):
        losses, gns, lrs = _cut_run(cut=cut, recovers=recovers)
        _, alerts = replay(losses, gns, lrs)
        assert len(raised(alerts, "divergence")) == 1
        assert _escalations(alerts) == [], (cut, recovers)


def test_escalation_is_the_same_in_batches_and_one_record_at_a_time():
    from losswatch.detectors.types import Record

    losses, gns, lrs = _cut_run(cut=True, recovers=False, n=200)
    _, one = replay(losses, gns, lrs)
    recs = [Record(s, x, g, lr) for s, (x, g, lr) in enumerate(zip(losses, gns, lrs))]
    _, batched = in_batches(recs, 17, run_id="t")
    key = lambda a: (a.id, a.step, a.last_step, a.severity, a.action.to_dict(), a.resolved_step)  # noqa: E731
    assert [key(a) for a in batched] == [key(a) for a in one]
    assert _escalations(batched)


def test_a_run_dead_at_chance_is_one_lost_episode_until_it_learns_again():
    import random

    r = random.Random(5)
    # blown up at the start, then at chance (its first loss) with noise for 1,500 steps: the level
    # sits at its "best", which is where it started, and that is no recovery
    dead = [2.3, 40.0, 150.0, 60.0, 9.0] + [2.3 * (1 + r.gauss(0, 0.02)) for _ in range(1500)]
    alerts = replay(dead, lrs=[3.0] * len(dead))[1]
    episodes = raised(alerts, "divergence")
    # one episode: opened by the blow-up past 10x the first loss, never closed while at chance
    assert len(episodes) == 1 and episodes[0].evidence["rule"] in ("first_loss", "lost")
    assert all(a.resolved_step is None for a in alerts if a.id == episodes[0].id)
    # the same run learning again (after a fix) closes the episode
    learns = dead[:600] + [2.3 * math.exp(-(s + 1) / 100) + 0.1 for s in range(600)]
    alerts = replay(learns, lrs=[3.0] * len(learns))[1]
    lost = [a for a in alerts if a.kind == "divergence" and a.evidence.get("rule") in ("first_loss", "lost")]
    assert lost and lost[-1].resolved_step is not None and lost[-1].resolved_step > 600


def test_a_run_that_spiked_then_sat_above_its_first_loss_does_not_wait_out_the_spike_window():
    # the shape of a char-RNN at 10x LR (held-out rnn-sgd-constant-x10-s4): one early spike,
    # then the loss climbs to 3-4x the first loss and stays there. A bad batch's aftermath never
    # sits above the untrained model's loss, so the 100-record after-spike wait does not apply.
    r = random.Random(3)
    losses = [4.6, 4.3, 3.9, 3.7, 4.9, 4.0, 7.0, 5.8, 7.1, 10.7, 13.7, 18.1, 18.4]
    losses += [15.0 * (1 + r.gauss(0, 0.15)) for _ in range(300)]
    div = raised(replay(losses)[1], "divergence")
    # the climb (five rises in a row, 5.8 -> 18.4) or the raw run-away from the lowest loss held
    # fire before the sustained level does
    assert div and div[0].evidence["rule"] in ("climb", "raw_runaway", "sustained") and div[0].step < 40


def test_an_escalated_lost_episode_still_closes_only_once_the_run_learns_again():
    r = random.Random(5)

    def chance(k):
        return [2.3 * (1 + r.gauss(0, 0.02)) for _ in range(k)]

    # dead at chance after a blow-up (a lost episode), the advice taken (LR cut 10x), a second
    # blow-up at the lower LR (the episode escalates), then at chance again: still lost
    losses = [2.3, 40.0, 150.0, 60.0, 9.0] + chance(400)
    lrs = [3.0] * len(losses)
    tail = [8.0 * (1 + r.gauss(0, 0.02)) for _ in range(60)] + chance(800)
    alerts = replay(losses + tail, lrs=lrs + [0.3] * len(tail))[1]
    div = [a for a in alerts if a.kind == "divergence"]
    assert any(a.evidence.get("escalation") for a in div)  # the escalation happened
    assert {a.id for a in div} == {div[0].id} and div[0].evidence["rule"] in ("first_loss", "lost")
    assert all(a.resolved_step is None and a.evidence["rule"] in ("first_loss", "lost") for a in div)


# held-out linreg-sgd-warmup_cosine-x100-s4, steps 0-8: SGD whose LR climbs 0.025 per step
WARMUP_X100 = [1.446, 1.203, 1.096, 0.7056, 2.195, 4.474, 1.241, 4.184, 1.686]
WARMUP_X100_GN = [3.12, 3.02, 2.91, 1.37, 5.33, 7.69, 2.49, 7.85, 3.38]


def test_two_rises_while_the_lr_warms_up_are_a_run_away():
    ramp = [0.025 * s for s in range(len(WARMUP_X100))]
    _, alerts = replay(WARMUP_X100, WARMUP_X100_GN, ramp)
    div = raised(alerts, "divergence")
    assert [a.step for a in div] == [5]
    assert div[0].evidence["rule"] in ("streak", "raw_runaway") and "warms up" in div[0].message
    assert div[0].action.params == {"factor": 0.1}


def test_the_same_two_rises_at_a_steady_or_falling_lr_are_not_yet_a_run_away():
    n = len(WARMUP_X100)
    for lrs in ([0.2] * n, [0.2 - 0.02 * s for s in range(n)], None):
        _, alerts = replay(WARMUP_X100, WARMUP_X100_GN, lrs)
        assert raised(alerts, "divergence") == []


def test_after_the_warm_up_a_two_rise_jump_needs_the_usual_evidence():
    # "the LR is ramping" means rising on this record: a warm-up that ended 1,000 steps ago (the
    # LR's last direction is still "up") does not excuse two rises from the noise guard
    losses, gns, _ = healthy_curve(1300, seed=4)
    losses[1199:1202] = [0.29, 1.5, 4.6]
    warm_then_flat = [1e-3 * min(1.0, (s + 1) / 100) for s in range(1300)]
    for lrs in (warm_then_flat, [1e-3] * 1300):
        _, alerts = replay(losses[:1202], gns[:1202], lrs[:1202])
        assert raised(alerts, "divergence") == []


def test_an_unstable_run_that_still_holds_progress_is_told_lr_too_high_not_lost():
    """The words match the data: a loss that jumps back up but stays below its first value is an
    LR that is too high (a warning: cut the LR, the run can go on); once the loss and its level
    are back above the first loss, every bit of progress is undone and the same alert escalates."""
    r = random.Random(3)
    down = [3.0 * math.exp(-k / 30) + 0.4 + r.gauss(0, 0.01) for k in range(150)]
    unstable = [0.5 * 1.35 ** k for k in range(1, 6)]  # up to ~2.2, below the first loss 3.4
    lost = [4.0 + 0.1 * k for k in range(40)]
    _, alerts = replay(down + unstable + lost)
    div = [a for a in alerts if a.kind == "divergence"]
    assert div, "the run-away is caught"
    first = div[0]
    assert (first.severity, first.event) == ("warning", "raised")
    assert first.message.startswith("LR too high") and "not lost" in first.message
    assert first.action.type == "scale_lr" and first.action.params["factor"] < 1
    assert first.step < 150 + len(unstable)
    esc = [a for a in div if a.id == first.id and a.event == "escalated"]
    assert esc and esc[0].severity == "critical" and esc[0].step == first.step
    assert esc[0].last_step >= 150 + len(unstable) and "first loss" in esc[0].message
