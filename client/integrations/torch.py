"""Plain PyTorch: one call per step logs loss, global grad-norm and LR.

    from losswatch.client import Monitor
    from losswatch.client.integrations.torch import TorchWatcher

    with Monitor(run_id="r1", project="p") as mon:
        watch = TorchWatcher(mon, model, optimizer, scheduler=sched)
        for step, batch in enumerate(loader):
            loss = loss_fn(model(batch.x), batch.y)
            optimizer.zero_grad(); loss.backward()
            watch.step(step, loss)          # after backward, before optimizer.step
            optimizer.step(); sched.step()
            if watch.should_stop: break

A loop that clips already has the norm: ``gn = clip_grad_norm_(model.parameters(), 1.0)`` then
``watch.step(step, loss, grad_norm=gn)`` adds no kernel at all.

The grad-norm is one fused reduction (``torch._foreach_norm`` over the gradients, then
``torch.linalg.vector_norm`` over the stacked per-parameter norms) returning a 0-d tensor on the
gradients' device: no ``.item()``, no host-device sync per step. Loss and grad-norm tensors go to
``Monitor.log`` unchanged; the client reads them at flush time.

torch is imported lazily (inside functions), so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..acting import Actor, StopTraining
from ._common import NO_LOSS_AFTER, NoLossWatch, optimizer_meta

__all__ = ["TorchWatcher", "global_grad_norm", "current_lr", "StopTraining"]


def global_grad_norm(parameters: Iterable[Any], norm_type: float = 2.0) -> Any:
    """The norm of all gradients taken together, as a 0-d tensor (None when no parameter has one).

    Equal to ``torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))`` without
    concatenating anything: per-parameter norms come from one fused ``_foreach_norm`` kernel per
    (device, dtype) group, then one ``vector_norm`` over the stacked norms.

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 0.0])
    >>> b = torch.nn.Parameter(torch.zeros(1)); b.grad = torch.tensor([4.0])
    >>> global_grad_norm([w, b])
    tensor(5.)
    """
    import torch

    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    first_device = grads[0].device
    per_group = []
    for (device, _dtype), gs in groups.items():
        dense = [g for g in gs if not g.is_sparse]
        norms = list(torch._foreach_norm(dense, norm_type)) if dense else []
        norms += [torch.linalg.vector_norm(g.coalesce().values(), norm_type) for g in gs if g.is_sparse]
        total = torch.linalg.vector_norm(torch.stack(norms).float(), norm_type)
        # moving a 0-d tensor between devices is asynchronous for GPU->GPU; only a mixed
        # CPU/GPU model pays a copy here, and it is still not a host sync of the training stream
        per_group.append(total if device == first_device else total.to(first_device, non_blocking=True))
    if len(per_group) == 1:
        return per_group[0]
    return torch.linalg.vector_norm(torch.stack(per_group), norm_type)


def current_lr(optimizer: Any) -> Any:
    """The LR of the optimizer's first param group (a float, or a tensor for capturable optimizers).

    WHY the first group: the common case has one group, or groups that share one schedule scaled
    per group (e.g. no weight decay on biases); the detectors need one LR to explain the loss.
    """
    if optimizer is None or not optimizer.param_groups:
        return None
    return optimizer.param_groups[0]["lr"]


class TorchWatcher:
    """Logs loss, global grad-norm and LR of a plain PyTorch loop with one call per step.

    Parameters
    ----------
    monitor : losswatch.client.Monitor
        Where the records go (anything with ``log(step, **fields)`` works).
    model : torch.nn.Module or None
        Its parameters' gradients give the grad-norm. Default: the optimizer's parameters.
    optimizer : torch.optim.Optimizer or None
        Its first param group's LR is logged.
    scheduler : torch LR scheduler or None
        Only used when acting (``actor``/``act``): scaled together with the optimizer.
    actor : Actor or None
        Apply recommendations in the training thread (see losswatch.client.acting). With
        ``act=True`` (or ``act_dry_run=True``) the Monitor's one Actor is used
        (``Monitor.attach_actor``: built from optimizer and scheduler, or shared with a Monitor
        already acting, never a second one); a monitor of another kind gets one built here.
    act, act_dry_run : bool
        Opt in to acting (dry run: only report what would be done).
    on_rollback : callable(step) or None
        Passed to the Actor: restores a checkpoint at or before ``step``.
    on_stop : callable() or None
        Passed to the Actor: ends training your way when losswatch advises stopping.
    raise_on_stop : bool
        When losswatch advises ``stop``, :meth:`step` raises :class:`StopTraining` (catch it
        around your loop). Otherwise :attr:`should_stop` turns True and your loop checks it.
    actor_options : dict
        Extra Actor arguments (cooldown_steps, max_actions, min_persist_steps).
    warn_no_loss_after : (steps, seconds) or None
        Say once on the ``losswatch`` logger when no step has carried a loss after this many
        steps and seconds (both); None: never.
    """

    def __init__(
        self,
        monitor: Any,
        model: Any = None,
        optimizer: Any = None,
        *,
        scheduler: Any = None,
        actor: Actor | None = None,
        act: bool = False,
        act_dry_run: bool = False,
        on_rollback: Any = None,
        on_stop: Any = None,
        raise_on_stop: bool = False,
        actor_options: dict[str, Any] | None = None,
        warn_no_loss_after: tuple[int, float] | None = NO_LOSS_AFTER,
    ) -> None:
        if model is None and optimizer is None:
            raise ValueError("TorchWatcher needs a model or an optimizer to read gradients from")
        self.monitor = monitor
        self.model = model
        self.optimizer = optimizer
        self._tell_optimizer(monitor, optimizer)
        self.raise_on_stop = raise_on_stop
        if actor is None and (act or act_dry_run):
            attach = getattr(monitor, "attach_actor", None)
            if attach is not None:
                actor = attach(optimizer, scheduler, act=act, act_dry_run=act_dry_run, on_rollback=on_rollback,
                               on_stop=on_stop, actor_options=actor_options)
            else:  # a monitor of another kind (anything with log()): an Actor of its own
                actor = Actor(optimizer, scheduler, on_rollback=on_rollback, on_stop=on_stop,
                              dry_run=act_dry_run and not act, monitor=monitor, **(actor_options or {}))
        self.actor = actor
        self._no_loss = NoLossWatch("TorchWatcher.step(step, loss) is called without the loss: pass "
                                    "the step's loss tensor", warn_no_loss_after)

    @staticmethod
    def _tell_optimizer(monitor: Any, optimizer: Any) -> None:
        """Add the optimizer's name and momentum to the run metadata, unless the caller gave them."""
        update = getattr(monitor, "update_meta", None)
        if optimizer is None or update is None:
            return
        given = getattr(monitor, "meta", None) or {}
        fields = {k: v for k, v in optimizer_meta(optimizer).items() if k not in given}
        if fields:
            update(fields)

    def _parameters(self) -> list[Any]:
        if self.model is not None:
            return list(self.model.parameters())
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def grad_norm(self) -> Any:
        """The current global grad-norm (0-d tensor, no sync)."""
        return global_grad_norm(self._parameters())

    def step(self, step: int, loss: Any = None, grad_norm: Any = None, **extra: Any) -> Any:
        """Log one step; call it after ``loss.backward()`` and before ``optimizer.step()``.

        ``grad_norm``: the global grad-norm when the loop already has it, e.g. what
        ``torch.nn.utils.clip_grad_norm_`` returned (the norm before clipping, the one that says
        whether the gradients blow up); otherwise it is computed here (a few small kernels:
        bench/results/gpu-overhead.md says what they cost a launch-bound loop).
        Returns the grad-norm logged (the tensor computed here, or the ``grad_norm`` given).
        ``extra`` fields (e.g. ``val_loss=...``, ``tokens_per_s=...``) go to ``Monitor.log`` as
        they are.
        """
        gn = self.grad_norm() if grad_norm is None else grad_norm
        self.monitor.log(step, loss=loss, grad_norm=gn, lr=current_lr(self.optimizer), **extra)
        if not self._no_loss.done:
            self._no_loss.record(self.monitor, loss)
        if self.actor is not None:
            self._act(step)
        return gn

    def _act(self, step: int) -> None:
        self.actor.follow(step, self.monitor)
        if self.raise_on_stop and self.actor.stop_requested:
            raise StopTraining(f"losswatch asked training to stop at step {step}")

    @property
    def should_stop(self) -> bool:
        """True once losswatch's advice to stop was applied."""
        return self.actor is not None and self.actor.stop_requested

