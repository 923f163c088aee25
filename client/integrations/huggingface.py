"""Hugging Face ``Trainer``: a ``TrainerCallback`` that streams loss, grad-norm and LR every step.

    from losswatch.client.integrations.huggingface import LosswatchCallback

    trainer = Trainer(..., callbacks=[LosswatchCallback(project="gpt2-ft", url="http://losswatch:8000")])

Every optimizer step is one record, whatever ``logging_steps`` is (the Trainer logs only every
``logging_steps`` steps, 500 by default, the loss averaged over them):

- loss: the ``loss`` of the model's own output (a forward hook on the model in training mode,
  detached, read at flush time: no host sync); with gradient accumulation the micro-batches'
  losses are averaged (summed when the Trainer passes ``num_items_in_batch`` to the model, which
  then already divides by the whole step's token count);
- LR: the optimizer's first param group in ``on_pre_optimizer_step`` (the LR this step uses);
- grad-norm: computed in ``on_pre_optimizer_step`` when the Trainer does not clip
  (``max_grad_norm=0``); when it clips (the default, 1.0) the gradients a callback sees are
  already clipped, so the grad-norm comes from the Trainer's own logs (its pre-clip value) at
  the logged steps only, and the callback says so once at train begin;
- ``eval_loss`` is logged as ``val_loss``. The record's step is ``state.global_step``.

A model whose output carries no loss (a ``compute_loss_func`` or label smoother takes the labels
away, ``return_dict=False``) gives no per-step loss: the callback says so once, with the setting
to change, and records the Trainer's logged steps only. Run id: the one given, else
``args.run_name``, else a random one.

Acting (``act=True`` / ``act_dry_run=True``): the Actor scales the Trainer's optimizer and its LR
scheduler, clips through an optimizer step pre-hook, and stops through
``control.should_training_stop``. ``on_rollback`` (a function of the step) is yours to supply.

transformers is imported only when ``LosswatchCallback`` is first accessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._common import NO_LOSS_AFTER, NoLossWatch, Session, SessionCallback, lazy_class, number, optimizer_meta, plain_metadata
from .torch import current_lr, global_grad_norm

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


def _logs_every_step(args: Any) -> bool:
    """The Trainer logs every optimizer step (its logs alone would then give every record)."""
    strategy = str(getattr(args.logging_strategy, "value", args.logging_strategy))
    return strategy == "steps" and args.logging_steps == 1


def _epoch_ends(args: Any, state: Any) -> bool:
    """This step ends an epoch and the Trainer logs or evaluates per epoch (it decides so in
    ``on_epoch_end``, after the step's ``on_step_end``)."""
    per_epoch = any(str(getattr(getattr(args, k, None), "value", getattr(args, k, None))) == "epoch"
                    for k in ("eval_strategy", "logging_strategy"))
    return per_epoch and state.epoch is not None and float(state.epoch).is_integer()


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
        warn_no_loss_after : (steps, seconds) or None
            Say once when no record has carried a loss after this many steps and seconds (both).
        """

        def __init__(self, monitor: Any = None, *, run_id: str | None = None, project: str | None = None,
                     url: str | None = None, token: str | None = None, meta: dict | None = None,
                     act: bool = False, act_dry_run: bool = False, on_rollback: Any = None,
                     actor_options: dict | None = None, monitor_options: dict | None = None,
                     warn_no_loss_after: tuple[int, float] | None = NO_LOSS_AFTER) -> None:
            opts = dict(actor_options or {})
            if on_rollback is not None:
                opts["on_rollback"] = on_rollback
            self.session = Session(monitor, act=act, act_dry_run=act_dry_run, actor_options=opts,
                                   run_id=run_id, project=project, url=url, token=token, meta=meta,
                                   **(monitor_options or {}))
            self.session.no_loss = NoLossWatch(
                "the model's outputs carry no loss and the Trainer has logged none yet (see logging_steps "
                "and logging_strategy): set logging_steps=1, or let the model compute its loss from the "
                "labels", warn_no_loss_after)
            # a step's record waits here when the Trainer logs or evaluates that step: its
            # logged grad-norm and its eval_loss join it (one record per step)
            self._held: tuple[int, dict] | None = None
            self._hook: Any = None
            self._loss: Any = None  # the step's loss so far (its micro-batches)
            self._micro = 0
            self._summed = False  # micro-batch losses already divided by the whole step's items
            self._lr: Any = None
            self._grad_norm: Any = None
            self._clipping = False
            self._told_no_loss = False
            self._last_sent: int | None = None  # the step of the last record sent
            self._val_next: Any = None  # an eval_loss of a step already sent: joins the next record

        def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
            meta = plain_metadata({
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
            if model is not None and self._hook is None:
                self._hook = model.register_forward_hook(self._on_forward, with_kwargs=True)
            self._clipping = bool(args.max_grad_norm) and args.max_grad_norm > 0
            if self._clipping and not _logs_every_step(args):
                from ..announce import log

                log.info("losswatch: run %s: loss and LR are recorded every step, the grad-norm only at "
                         "the Trainer's logged steps (logging_steps=%s): it clips the gradients "
                         "(max_grad_norm=%s) before a callback can read them. logging_steps=1 records "
                         "it every step.", self.session.monitor.run_id, args.logging_steps, args.max_grad_norm)

        def _on_forward(self, module, inputs, kwargs, output):
            if not module.training:
                return  # an evaluation
            loss = output.get("loss") if isinstance(output, Mapping) else None
            if loss is None or not hasattr(loss, "detach"):
                return
            loss = loss.detach()
            if self._micro == 0:
                self._loss = loss
                self._summed = kwargs.get("num_items_in_batch") is not None
            else:
                self._loss = self._loss + loss
            self._micro += 1

        def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
            if optimizer is not None:
                self._lr = current_lr(_inner_optimizer(optimizer))
            if not self._clipping and model is not None:
                self._grad_norm = global_grad_norm(model.parameters())  # 0-d tensor, no sync

        def on_step_begin(self, args, state, control, **kw):
            self._emit_held(control)  # a step the Trainer meant to log but did not

        def on_step_end(self, args, state, control, **kw):
            if self.session.monitor is None:
                return
            step = int(state.global_step)
            loss, n = self._loss, self._micro
            if loss is not None and n > 1 and not self._summed:
                loss = loss / n
            rec = {"loss": number(loss), "grad_norm": number(self._grad_norm), "lr": number(self._lr)}
            self._loss, self._micro, self._grad_norm, self._lr = None, 0, None, None
            if loss is None and not self._told_no_loss:
                self._told_no_loss = True
                if not _logs_every_step(args):
                    from ..announce import log

                    log.warning("losswatch: run %s: the model's output carries no loss (a compute_loss_func or "
                                "label smoother takes the labels, or return_dict=False), so only the Trainer's "
                                "logged steps are recorded (logging_steps=%s, the loss averaged over them): set "
                                "logging_steps=1 to record every step", self.session.monitor.run_id,
                                args.logging_steps)
            if control.should_log or control.should_evaluate or _epoch_ends(args, state):
                # the Trainer logs (its grad-norm, its loss when the model gave none) or
                # evaluates this step next (at an epoch's end: decided after this hook): the
                # record waits for what they add
                self._held = (step, rec)
            elif loss is not None:
                self._emit(step, rec, control)
            else:  # nothing to send for this step: it still counts as a step without a loss
                self.session.no_loss.record(self.session.monitor, None)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if self.session.monitor is None:
                return
            step = int(state.global_step)
            if "loss" in logs:
                rec = self._take_held(step, control)
                if not rec and step == self._last_sent:
                    return  # a log at an epoch's end of a step already sent with its own values
                logged = {"loss": logs.get("loss"), "grad_norm": logs.get("grad_norm"),
                          "lr": logs.get("learning_rate")}
                for k, v in logged.items():  # the step's own values win over a window's average
                    if rec.get(k) is None:
                        rec[k] = number(v)
                if control.should_evaluate or _epoch_ends(args, state):
                    # the evaluation of this same step follows: one record per step, so wait for
                    # its eval_loss (the service keeps the first record of a step, drops repeats)
                    self._held = (step, rec)
                    return
                self._emit(step, rec, control)
            elif "eval_loss" in logs:
                rec = self._take_held(step, control)
                val = number(logs.get("eval_loss"))
                if not rec and step == self._last_sent:
                    self._val_next = val  # its step went already (a repeat would be dropped)
                    return
                self._emit(step, {**rec, "val_loss": val}, control)

        def _take_held(self, step: int, control: Any) -> dict:
            """The held record of ``step`` (emptied); one of an earlier step is sent first."""
            if self._held is not None and self._held[0] == step:
                rec = self._held[1]
                self._held = None
                return rec
            self._emit_held(control)
            return {}

        def on_evaluate(self, args, state, control, **kw):
            # an evaluation without eval_loss in its logs: do not hold the step any longer
            self._emit_held(control)

        def _emit_held(self, control: Any) -> None:
            if self._held is not None:
                held, self._held = self._held, None
                self._emit(*held, control)

        def _emit(self, step: int, rec: dict, control: Any) -> None:
            if self._val_next is not None and rec.get("val_loss") is None:
                rec, self._val_next = {**rec, "val_loss": self._val_next}, None
            self.session.log(step, **rec)
            self._last_sent = step
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
            self._emit_held(control)
            if self._hook is not None:
                self._hook.remove()
                self._hook = None
            self.session.close()

    LosswatchCallback.__module__ = __name__
    return LosswatchCallback


__getattr__ = lazy_class(__name__, "LosswatchCallback", _build)
