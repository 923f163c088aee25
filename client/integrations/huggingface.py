"""Hugging Face ``Trainer``: a ``TrainerCallback`` that streams loss, grad-norm and LR.

    from losswatch.client.integrations.huggingface import LosswatchCallback

    trainer = Trainer(..., args=TrainingArguments(..., logging_steps=1),
                      callbacks=[LosswatchCallback(project="gpt2-ft", url="http://losswatch:8000")])

The Trainer's own logs carry ``loss``, ``grad_norm`` and ``learning_rate`` every ``logging_steps``
steps (``logging_steps=1``: every step; otherwise one record per logging window, the loss averaged
over it as the Trainer reports it); ``eval_loss`` is logged as ``val_loss``. The record's step is
``state.global_step``. Run id: the one given, else ``args.run_name``, else a random one.

Acting (``act=True`` / ``act_dry_run=True``): the Actor scales the Trainer's optimizer and its LR
scheduler, clips through an optimizer step pre-hook, and stops through
``control.should_training_stop``. ``on_rollback`` (a function of the step) is yours to supply.

transformers is imported only when ``LosswatchCallback`` is first accessed.
"""

from __future__ import annotations

from typing import Any

from ._common import Session, SessionCallback, json_safe, lazy_class, number, optimizer_meta

__all__ = ["LosswatchCallback"]



def _inner_optimizer(optimizer: Any) -> Any:
    """The torch optimizer under accelerate's wrapper (its param_groups are the same objects,
    but step hooks must be registered on the optimizer whose step() actually runs)."""
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


# Trainer's lr_scheduler_type -> losswatch's schedule names (detectors/schedules.py); the others
# (cosine_with_restarts, reduce_lr_on_plateau, ...) are not declared: the detectors then judge
# the LR from the logged values alone.
_SCHEDULES = {"linear": "warmup_linear", "cosine": "warmup_cosine", "constant_with_warmup": "warmup_constant"}


def _schedule_meta(args: Any, state: Any) -> dict[str, Any] | None:
    """The Trainer's LR schedule as run metadata ``{"name", "params"}`` so the detectors know which
    LR changes are planned (a warmup ramp, a decay to zero) and do not flag them."""
    kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    total = int(state.max_steps or 0)
    if total <= 0:
        return None
    warmup = int(args.get_warmup_steps(total)) if hasattr(args, "get_warmup_steps") else int(args.warmup_steps or 0)
    if kind == "constant" and warmup == 0:
        return {"name": "constant", "params": {"lr": float(args.learning_rate)}}
    if kind not in _SCHEDULES:
        return None
    params = {"lr": float(args.learning_rate), "warmup_steps": warmup, "total_steps": total}
    return {"name": _SCHEDULES[kind], "params": params}


def _build() -> type:
    from transformers import TrainerCallback

    class LosswatchCallback(SessionCallback, TrainerCallback):
        """Stream a Trainer's loss, grad-norm and LR to losswatch (optionally act on its advice).

        Parameters
        ----------
        monitor : losswatch.client.Monitor, optional
            Use this Monitor; otherwise one is opened at train begin from the arguments below
            and closed (flushed) at train end.
        run_id, project, url, token, meta : optional
            Monitor arguments. ``meta`` is merged over what the callback records (learning rate,
            scheduler type, warmup, batch size, max steps).
        act, act_dry_run : bool
            Opt in to acting on losswatch's advice (dry run: only report).
        on_rollback : callable(step, checkpoint) or callable(step), optional
            Restores a checkpoint when rollback is advised (the checkpoint folders Trainer saves
            are recorded by ``on_save``; docs/acting.md).
        actor_options : dict, optional
            cooldown_steps, max_actions, min_persist_steps for the Actor.
        monitor_options : dict, optional
            Any other Monitor argument (flush_interval, batch_size, ...).
        """

        def __init__(self, monitor: Any = None, *, run_id: str | None = None, project: str | None = None,
                     url: str | None = None, token: str | None = None, meta: dict | None = None,
                     act: bool = False, act_dry_run: bool = False, on_rollback: Any = None,
                     actor_options: dict | None = None, monitor_options: dict | None = None) -> None:
            opts = dict(actor_options or {})
            if on_rollback is not None:
                opts["on_rollback"] = on_rollback
            self.session = Session(monitor, act=act, act_dry_run=act_dry_run, actor_options=opts,
                                   run_id=run_id, project=project, url=url, token=token, meta=meta,
                                   **(monitor_options or {}))
            self._held: tuple[int, dict] | None = None  # a train record waiting for its eval_loss

        def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
            meta = json_safe({
                "framework": "transformers",
                "lr": args.learning_rate,
                "batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "max_grad_norm": args.max_grad_norm,
            })
            meta.update(optimizer_meta(_inner_optimizer(optimizer)))  # a name and a finite float
            schedule = _schedule_meta(args, state)
            if schedule is not None:
                meta["lr_schedule"] = schedule
            self.session.open(default_run_id=args.run_name, meta=meta)
            if self.session.acting and self.session.actor is None:
                self.session.make_actor(_inner_optimizer(optimizer) if optimizer is not None else None, lr_scheduler)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if self.session.monitor is None:
                return
            step = int(state.global_step)
            if "loss" in logs:
                rec = {"loss": number(logs.get("loss")), "grad_norm": number(logs.get("grad_norm")),
                       "lr": number(logs.get("learning_rate"))}
                if control.should_evaluate:
                    # the evaluation of this same step follows: one record per step, so wait for
                    # its eval_loss (the service keeps the first record of a step, drops repeats)
                    self._held = (step, rec)
                    return
                self._emit(step, rec, control)
            elif "eval_loss" in logs:
                held_step, rec = self._held if self._held is not None else (step, {})
                self._held = None
                if held_step != step and rec:
                    self._emit(held_step, rec, control)
                    rec = {}
                self._emit(step, {**rec, "val_loss": number(logs.get("eval_loss"))}, control)

        def on_evaluate(self, args, state, control, **kw):
            # an evaluation without eval_loss in its logs: do not hold the step any longer
            if self._held is not None:
                self._emit(*self._held, control)
                self._held = None

        def _emit(self, step: int, rec: dict, control: Any) -> None:
            self.session.monitor.log(step, **rec)
            if self.session.follow(step):
                control.should_training_stop = True

        def on_save(self, args, state, control, **kw):
            # Trainer just wrote <output_dir>/checkpoint-<N>, the state after N optimizer steps,
            # from which the step logged as N + 1 runs: a rollback target (Monitor.checkpoint)
            if self.session.monitor is not None:
                import os

                step = int(state.global_step)
                self.session.monitor.checkpoint(step + 1, os.path.join(args.output_dir, f"checkpoint-{step}"))

        def on_train_end(self, args, state, control, **kw):
            if self._held is not None:
                self._emit(*self._held, control)
                self._held = None
            self.session.close()

    LosswatchCallback.__module__ = __name__
    return LosswatchCallback


__getattr__ = lazy_class(__name__, "LosswatchCallback", _build)
