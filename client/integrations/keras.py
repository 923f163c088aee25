"""Keras 3: a ``keras.callbacks.Callback`` that streams loss, grad-norm and LR every batch.

    import os; os.environ["KERAS_BACKEND"] = "torch"
    from losswatch.client.integrations.keras import LosswatchCallback

    model.fit(x, y, callbacks=[LosswatchCallback(project="mnist", url="http://losswatch:8000")])

Where each number comes from:

- loss: the loss of *this* batch. Keras reports a running mean over the epoch in ``logs``; the
  callback reads the model's loss tracker (a ``Mean``: total and count, weighted by batch size)
  and takes the difference since the previous batch, which is the batch's own loss. Without that
  tracker it falls back to differencing the running mean (exact for equal batch sizes).
- grad-norm (torch backend only): the gradients Keras left on the variables (``v.value.grad``;
  the torch trainer zeroes them at the start of the next step), one fused reduction. With the
  JAX or TensorFlow backends gradients are not reachable from a callback: grad_norm is not sent.
- LR: ``optimizer.learning_rate`` read at batch begin (a schedule's value for this step).
- step: ``optimizer.iterations`` at batch begin (0 for the first batch), so it keeps counting
  across epochs.
- val_loss: ``val_loss`` from ``on_epoch_end``, sent with the next batch's record.

Acting (``act=True``/``act_dry_run=True``): scale_lr assigns ``optimizer.learning_rate`` (a
constant LR only: a ``LearningRateSchedule`` object is not changed; the advice is then
refused), clip_grad_norm sets ``optimizer.global_clipnorm``, stop sets ``model.stop_training``.

keras is imported only when ``LosswatchCallback`` is first accessed.
"""

from __future__ import annotations

from typing import Any

from ..acting import Actor
from ._common import NO_LOSS_AFTER, NoLossWatch, Session, SessionCallback, lazy_class, optimizer_meta, plain_metadata

__all__ = ["LosswatchCallback", "KerasActor"]



def _to_float(keras: Any, v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)  # Python numbers, numpy scalars, 0-d tensors and Keras variables
    except (TypeError, ValueError):
        try:
            return float(keras.ops.convert_to_numpy(v))
        except Exception:
            return None


class KerasActor(Actor):
    """The Actor for a Keras 3 optimizer (any backend)."""

    def __init__(self, optimizer: Any = None, scheduler: Any = None, **kw: Any) -> None:
        super().__init__(optimizer, None, **kw)
        import keras

        self._keras = keras

    def _unsupported_reason(self, act: dict[str, Any]) -> str | None:
        why = super()._unsupported_reason(act)
        if why is None and act["type"] == "scale_lr" and not self._lr_is_variable():
            return "the Keras optimizer's LR is a schedule object; scale it in your code"
        return why

    def _check_optimizer(self) -> str | None:
        return None  # a Keras optimizer has no param_groups: its LR is a variable (scale_lr below)

    def _lr_is_variable(self) -> bool:
        lr = getattr(self.optimizer, "_learning_rate", None)
        return lr is not None and hasattr(lr, "assign")

    def current_lr(self) -> float:
        return _to_float(self._keras, self.optimizer.learning_rate) or float("nan")

    def scale_lr(self, factor: float) -> None:
        self.optimizer.learning_rate.assign(self.current_lr() * factor)
        self.lr_scale *= factor

    def install_clipping(self, max_norm: float) -> None:
        # Keras applies global_clipnorm inside optimizer.apply, before the update
        self.clip_max_norm = max_norm
        self.optimizer.global_clipnorm = max_norm

    def clip_gradients(self) -> None:
        """Nothing to do here: the optimizer clips (global_clipnorm)."""


def _build() -> type:
    import keras

    class LosswatchCallback(SessionCallback, keras.callbacks.Callback):
        """Stream a Keras fit's per-batch loss, grad-norm and LR to losswatch (optionally act).

        Parameters
        ----------
        monitor : losswatch.client.Monitor, optional
            Use this Monitor; otherwise one is opened at train begin and closed at train end.
        run_id, project, url, token, meta : optional
            Monitor arguments (run id default: the model's name plus a random suffix).
        act, act_dry_run, actor_options
            Opt in to acting (see the module docstring).
        monitor_options : dict, optional
            Any other Monitor argument.
        warn_no_loss_after : (steps, seconds) or None
            Say once when no batch has carried a loss after this many steps and seconds (both).
        """

        def __init__(self, monitor: Any = None, *, run_id: str | None = None, project: str | None = None,
                     url: str | None = None, token: str | None = None, meta: dict | None = None,
                     act: bool = False, act_dry_run: bool = False, actor_options: dict | None = None,
                     monitor_options: dict | None = None,
                     warn_no_loss_after: tuple[int, float] | None = NO_LOSS_AFTER) -> None:
            super().__init__()
            self.session = Session(monitor, act=act, act_dry_run=act_dry_run, actor_options=actor_options,
                                   run_id=run_id, project=project, url=url, token=token, meta=meta,
                                   **(monitor_options or {}))
            self.session.no_loss = NoLossWatch(
                "Keras reports no loss for the batches: compile the model with a loss, or have "
                "train_step return one in its logs", warn_no_loss_after)
            self._prev: tuple[float, float] | None = None  # loss tracker (total, count) after last batch
            self._prev_mean: tuple[int, float] | None = None  # fallback: (batch index, running mean)
            self._val_loss: float | None = None
            self._torch = keras.backend.backend() == "torch"
            self._step = 0
            self._lr: float | None = None

        def on_train_begin(self, logs=None):
            import uuid

            opt = self.model.optimizer
            meta = {"framework": "keras", "backend": keras.backend.backend(),
                    **optimizer_meta(opt), "lr": _to_float(keras, opt.learning_rate)}
            self.session.open(default_run_id=f"{self.model.name}-{uuid.uuid4().hex[:8]}", meta=plain_metadata(meta))
            if self.session.acting and self.session.actor is None:
                self.session.make_actor(opt, actor_cls=KerasActor, on_stop=self._stop)

        def _stop(self) -> None:
            self.model.stop_training = True

        def on_epoch_begin(self, epoch, logs=None):
            self._prev = None  # Keras resets its metrics at every epoch
            self._prev_mean = None

        def _batch_loss(self, batch: int, logs: dict) -> float | None:
            tracker = getattr(self.model, "_loss_tracker", None)
            if tracker is not None and hasattr(tracker, "total") and hasattr(tracker, "count"):
                total, count = _to_float(keras, tracker.total), _to_float(keras, tracker.count)
                if total is not None and count is not None:
                    p_total, p_count = self._prev or (0.0, 0.0)
                    self._prev = (total, count)
                    if count > p_count:
                        return (total - p_total) / (count - p_count)
            mean = _to_float(keras, logs.get("loss"))
            if mean is None:
                return None
            prev = self._prev_mean
            self._prev_mean = (batch, mean)
            if prev is None or batch != prev[0] + 1:
                return mean if batch == 0 else None
            return (batch + 1) * mean - (prev[0] + 1) * prev[1]

        def _grad_norm(self) -> Any:
            if not self._torch:
                return None
            from .torch import global_grad_norm

            return global_grad_norm([v.value for v in self.model.trainable_variables])

        def on_train_batch_begin(self, batch, logs=None):
            # the step index and the LR this batch's update uses (a schedule is read before the
            # optimizer's iteration counter moves on)
            opt = self.model.optimizer
            self._step = int(_to_float(keras, opt.iterations) or 0)
            self._lr = _to_float(keras, opt.learning_rate)

        def on_train_batch_end(self, batch, logs=None):
            mon = self.session.monitor
            if mon is None:
                return
            step = self._step
            extra = {}
            if self._val_loss is not None:
                extra["val_loss"], self._val_loss = self._val_loss, None
            self.session.log(step, loss=self._batch_loss(batch, logs or {}), grad_norm=self._grad_norm(),
                             lr=self._lr, **extra)
            if self.session.follow(step):
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            v = (logs or {}).get("val_loss")
            if v is not None:
                self._val_loss = _to_float(keras, v)

        def on_train_end(self, logs=None):
            self.session.close()

    LosswatchCallback.__module__ = __name__
    return LosswatchCallback


__getattr__ = lazy_class(__name__, "LosswatchCallback", _build)
