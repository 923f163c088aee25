"""LR policies of the benchmark: what was declared (a losswatch ``lr_schedule`` spec, the form a
user passes as run metadata) and what the training loop really applied (``lr_at``).

For the healthy policies the two agree. The schedule bugs are the classic ones:

* ``lr_jump``: declared constant, but from half-way the LR is 20x higher (a resumed job that
  picked up another config's LR, a warm-up multiplier applied twice).
* ``step_per_batch``: a StepLR meant per epoch (halve every 10 epochs of 25 steps) stepped per
  batch, so the LR halves every 10 steps and is ~0 after ~100 steps.
* ``linear_short``: warm-up + linear decay whose ``total_steps`` was computed per epoch, so the
  LR hits 0 at a quarter of the run and stays there (Hugging Face's schedule clamps at 0).
"""

from __future__ import annotations

import math

HEALTHY_POLICIES = ("constant", "cyclic", "one_cycle", "warmup_cosine", "multistep")
BUG_POLICIES = ("lr_jump", "step_per_batch", "linear_short")


def declared_schedule(policy: str, lr: float, total: int) -> dict:
    """The schedule as a user would declare it (names of losswatch.detectors.schedules)."""
    if policy in ("constant", "lr_jump"):
        return {"name": "constant", "lr": lr}
    if policy == "cyclic":
        return {"name": "cyclic", "base_lr": lr / 20, "max_lr": lr, "step_size_up": 75}
    if policy == "one_cycle":
        return {"name": "one_cycle", "max_lr": lr, "total_steps": total}
    if policy == "warmup_cosine":
        return {"name": "warmup_cosine", "lr": lr, "warmup_steps": total // 10, "total_steps": total}
    if policy == "multistep":
        return {"name": "multistep", "lr": lr, "milestones": [total // 2, (3 * total) // 4], "gamma": 0.1}
    if policy == "step_per_batch":
        return {"name": "step", "lr": lr, "step_size": 10, "gamma": 0.5, "interval": "epoch", "steps_per_epoch": 25}
    if policy == "linear_short":
        return {"name": "warmup_linear", "lr": lr, "warmup_steps": total // 20, "total_steps": total}
    raise ValueError(policy)


def lr_at(policy: str, lr: float, total: int, s: int) -> float:
    """The LR the training loop really uses at optimizer step ``s`` (0-based)."""
    if policy == "constant":
        return lr
    if policy == "lr_jump":
        return lr * 20 if s >= total // 2 else lr
    if policy == "cyclic":  # triangular CyclicLR, period 150
        base, top, up = lr / 20, lr, 75
        cycle = math.floor(1 + s / (2 * up))
        x = abs(s / up - 2 * cycle + 1)
        return base + (top - base) * max(0.0, 1 - x)
    if policy == "one_cycle":  # OneCycleLR, cos, pct_start 0.3, div 25, final_div 1e4
        init = lr / 25
        low = init / 1e4
        up_end = 0.3 * total - 1
        if s <= up_end:
            pct, a, b = s / up_end, init, lr
        else:
            pct, a, b = (s - up_end) / (total - 1 - up_end), lr, low
        return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))
    if policy == "warmup_cosine":
        w = total // 10
        if s < w:
            return lr * s / w
        prog = (s - w) / max(1, total - w)
        return lr * 0.5 * (1 + math.cos(math.pi * prog))
    if policy == "multistep":
        return lr * (0.1 ** ((s >= total // 2) + (s >= (3 * total) // 4)))
    if policy == "step_per_batch":
        return lr * 0.5 ** (s // 10)
    if policy == "linear_short":
        w, t = total // 20, total // 4  # the bug: total_steps of one epoch, not of the run
        if s < w:
            return lr * s / w
        return lr * max(0.0, (t - s) / (t - w))
    raise ValueError(policy)
