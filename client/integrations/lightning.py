"""PyTorch Lightning: a ``Callback`` that streams loss, global grad-norm and LR every optimizer step.

    from losswatch.client.integrations.lightning import LosswatchCallback

    trainer = L.Trainer(callbacks=[LosswatchCallback(project="resnet", url="http://losswatch:8000")])

Where each number comes from:

- grad-norm: ``on_before_optimizer_step`` (after backward and gradient unscaling, before Lightning's
  own clipping), one fused reduction, a 0-d tensor (no host sync);
- LR: the first optimizer's first param group at that moment (the LR this step uses);
- loss: the ``loss`` the training step returned (``on_train_batch_end``), detached, unsynced;
- step: ``trainer.global_step`` before the optimizer step (0 for the first), so the record of
  step s carries the LR and gradients of optimizer step s. With gradient accumulation one record
  per optimizer step (the loss of its last micro-batch).
- val_loss: ``val_loss`` from ``trainer.callback_metrics`` after each validation, sent with the
  next training step's record (a validation after the last training step is not sent).

Acting (``act=True``/``act_dry_run=True``): the Actor scales the first optimizer and its first LR
scheduler; clipping runs in ``on_before_optimizer_step`` (a step pre-hook would run before
Lightning's closure computes the gradients); stop sets ``trainer.should_stop``.

Lightning is imported only when ``LosswatchCallback`` is first accessed.
"""

from __future__ import annotations

from typing import Any

from ._common import NO_LOSS_AFTER, NoLossWatch, Session, SessionCallback, lazy_class, number, optimizer_meta, plain_metadata
from .torch import current_lr, global_grad_norm

__all__ = ["LosswatchCallback"]



def _build() -> type:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:  # the standalone pytorch_lightning package
        from pytorch_lightning.callbacks import Callback

    class LosswatchCallback(SessionCallback, Callback):
        """Stream a Lightning run's loss, grad-norm and LR to losswatch (optionally act).

        Parameters
        ----------
        monitor : losswatch.client.Monitor, optional
            Use this Monitor; otherwise one is opened at fit start and closed at fit end.
        run_id, project, url, token, meta : optional
            Monitor arguments. Run id default: ``<logger name>-<logger version>`` when the trainer
            has a logger, else random.
        act, act_dry_run, on_rollback, actor_options
            Opt in to acting (see losswatch.client.acting.Actor).
        monitor_options : dict, optional
            Any other Monitor argument.
        warn_no_loss_after : (steps, seconds) or None
            Say once when no step has carried a loss after this many steps and seconds (both).
        """

        def __init__(self, monitor: Any = None, *, run_id: str | None = None, project: str | None = None,
                     url: str | None = None, token: str | None = None, meta: dict | None = None,
                     act: bool = False, act_dry_run: bool = False, on_rollback: Any = None,
                     actor_options: dict | None = None, monitor_options: dict | None = None,
                     warn_no_loss_after: tuple[int, float] | None = NO_LOSS_AFTER) -> None:
            super().__init__()
            opts = dict(actor_options or {})
            if on_rollback is not None:
                opts["on_rollback"] = on_rollback
            opts.setdefault("clip_with_hook", False)
            self.session = Session(monitor, act=act, act_dry_run=act_dry_run, actor_options=opts,
                                   run_id=run_id, project=project, url=url, token=token, meta=meta,
                                   **(monitor_options or {}))
            self.session.no_loss = NoLossWatch(
                "the LightningModule's training_step returns no loss (with manual optimization too, "
                "return the loss tensor or a dict with a 'loss' key)", warn_no_loss_after)
            self._step: int | None = None  # optimizer step whose grads/LR were read
            self._grad_norm: Any = None
            self._lr: Any = None
            self._last_logged: int | None = None
            self._val_loss: Any = None

        def on_fit_start(self, trainer, pl_module):
            logger = trainer.logger
            default = None
            if logger is not None and getattr(logger, "name", None) is not None:
                default = f"{logger.name}-{logger.version}"
            opt = trainer.optimizers[0] if trainer.optimizers else None
            meta = {"framework": "lightning", "max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs,
                    "accumulate_grad_batches": trainer.accumulate_grad_batches,
                    "gradient_clip_val": trainer.gradient_clip_val}
            if opt is not None:
                meta.update(optimizer_meta(opt))
                meta["lr"] = current_lr(opt)
            self.session.open(default_run_id=default, meta=plain_metadata(meta))
            if self.session.acting and self.session.actor is None:
                configs = trainer.lr_scheduler_configs
                sched = configs[0].scheduler if configs else None
                self.session.make_actor(opt, sched)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self._report_checkpoints(trainer)
            self._step = int(trainer.global_step)
            self._grad_norm = global_grad_norm(pl_module.parameters())
            self._lr = current_lr(optimizer)
            actor = self.session.actor
            if actor is not None and not actor.dry_run:
                actor.clip_gradients()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self._step is None or self.session.monitor is None:
                return  # no optimizer step in this batch (accumulating), or not set up
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            step, self._step = self._step, None
            extra = {}
            if self._val_loss is not None:
                extra["val_loss"], self._val_loss = self._val_loss, None
            self.session.log(step, loss=number(loss), grad_norm=self._grad_norm, lr=self._lr, **extra)
            self._last_logged = step
            if self.session.follow(step):
                trainer.should_stop = True

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            v = trainer.callback_metrics.get("val_loss")
            if v is not None:
                self._val_loss = number(v)

        def _report_checkpoints(self, trainer) -> None:
            """Tell the Monitor of files ModelCheckpoint wrote since the last step (it runs after
            this callback, so they show here, before the next optimizer step): each the state
            from which step ``global_step`` runs, a rollback target (Monitor.checkpoint)."""
            mon = self.session.monitor
            if mon is None:
                return
            seen = self.__dict__.setdefault("_checkpoints_seen", set())
            for cb in getattr(trainer, "checkpoint_callbacks", None) or []:
                for path in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
                    if path and path not in seen:
                        seen.add(path)
                        mon.checkpoint(int(trainer.global_step), path)

        def on_fit_end(self, trainer, pl_module):
            self.session.close()

    LosswatchCallback.__module__ = __name__
    return LosswatchCallback


__getattr__ = lazy_class(__name__, "LosswatchCallback", _build)
