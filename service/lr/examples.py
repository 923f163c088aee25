"""Small real training tasks for trying the LR tooling offline (torch + scikit-learn's bundled
data; nothing is downloaded). Each follows the training-function protocol of ``losswatch tune``:

    train(policy: dict, *, steps: int, seed: int, report) -> dict

``policy`` is an LR schedule declaration (``losswatch.detectors.schedules``); the function sets
the optimizer's LR to ``schedule.lr_at(step)`` before every step and calls
``report(step, loss=..., lr=..., grad_norm=...)`` after it; when ``report`` returns True the
trial has been judged lost (NaN, divergence) and the function stops and returns. It returns
``{"final_loss": ..., "best_loss": ..., "steps": ...}`` (losses: mean of the last 10 steps).

    losswatch tune losswatch.service.lr.examples:train_digits --lrs 0.01,0.1,1 ...
"""

from __future__ import annotations

import math
from typing import Any, Callable

Report = Callable[..., bool]


def _loop(model: Any, opt: Any, batches: Callable[[int], tuple[Any, Any]], loss_fn: Callable, policy: dict,
          steps: int, report: Report | None) -> dict[str, Any]:
    import torch

    from losswatch.detectors.schedules import build_schedule

    sched = build_schedule(policy)
    tail: list[float] = []
    best = math.inf
    done = 0
    for s in range(steps):
        lr = sched.lr_at(s)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches(s)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
        opt.step()
        v = float(loss.item())
        done = s + 1
        tail = (tail + [v])[-10:]
        if len(tail) == 10:
            best = min(best, sum(tail) / 10)
        if report is not None and report(s, loss=v, lr=lr, grad_norm=gn):
            break
        if not math.isfinite(v):
            break
    final = sum(tail) / len(tail) if tail else math.nan
    return {"final_loss": final, "best_loss": best if math.isfinite(best) else final, "steps": done}


def _random_batches(X: Any, y: Any, batch_size: int, seed: int) -> Callable[[int], tuple[Any, Any]]:
    """Batches of ``batch_size`` rows drawn with replacement by a generator of its own (``seed``),
    so the draws do not depend on the global torch RNG that initialised the model."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def batches(_s: int) -> tuple[Any, Any]:
        idx = torch.randint(0, len(X), (batch_size,), generator=g)
        return X[idx], y[idx]

    return batches


def train_digits(policy: dict, *, steps: int = 300, seed: int = 0, report: Report | None = None,
                 batch_size: int = 32) -> dict[str, Any]:
    """MLP (64-64-10) on scikit-learn's 8x8 digits, SGD with momentum 0.9, cross-entropy."""
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    d = load_digits()
    X = torch.tensor(d.data / 16, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    batches = _random_batches(X, y, batch_size, seed + 1)
    return _loop(model, opt, batches, torch.nn.functional.cross_entropy, policy, steps, report)


def train_regression(policy: dict, *, steps: int = 300, seed: int = 0, report: Report | None = None,
                     batch_size: int = 64) -> dict[str, Any]:
    """MLP (10-32-1) regression on scikit-learn's diabetes data (standardised), AdamW, MSE."""
    import torch
    from sklearn.datasets import load_diabetes

    torch.set_num_threads(1)
    d = load_diabetes()
    X = torch.tensor(d.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    t = torch.tensor(d.target, dtype=torch.float32)
    t = ((t - t.mean()) / t.std()).unsqueeze(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    batches = _random_batches(X, t, batch_size, seed + 1)
    return _loop(model, opt, batches, torch.nn.functional.mse_loss, policy, steps, report)


def train_char_lm(policy: dict, *, steps: int = 300, seed: int = 0, report: Report | None = None,
                  batch_size: int = 16, context: int = 24) -> dict[str, Any]:
    """A one-layer GRU character language model on the docstrings of a few standard-library
    modules (~10K characters, same text wherever Python is), AdamW, cross-entropy per character."""
    import argparse
    import csv
    import json

    import torch

    torch.set_num_threads(1)
    text = "".join(m.__doc__ or "" for m in (json, csv, argparse))
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(seed)
    v = len(chars)

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(v, 32)
            self.rnn = torch.nn.GRU(32, 48, batch_first=True)
            self.out = torch.nn.Linear(48, v)

        def forward(self, x):
            h, _ = self.rnn(self.emb(x))
            return self.out(h).reshape(-1, v)

    model = LM()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(seed + 1)

    def batches(_s: int):
        i = torch.randint(0, len(data) - context - 1, (batch_size,), generator=g)
        x = torch.stack([data[j:j + context] for j in i.tolist()])
        y = torch.stack([data[j + 1:j + context + 1] for j in i.tolist()]).reshape(-1)
        return x, y

    return _loop(model, opt, batches, torch.nn.functional.cross_entropy, policy, steps, report)
