"""Ray Tune: every trial is a losswatch run, grouped by experiment.

    from losswatch.client.integrations.ray_tune import LosswatchTuneCallback

    cb = LosswatchTuneCallback(url="http://losswatch:8000")
    tuner = tune.Tuner(train_fn, param_space={...},
                       run_config=tune.RunConfig(name="lr-sweep", callbacks=[cb], stop=cb.stopper()))

The callback runs on the driver and sees every result a trial reports with ``tune.report``: one
Monitor per trial, ``project`` = the experiment's name (``RunConfig(name=...)``, or Ray's generated
one), ``run_id`` = the trial id, the trial's config as run metadata. Each result becomes a record:
``step`` from ``result[step_key]`` (default ``"step"`` when the trial reports one, else Ray's
``training_iteration``), ``loss``/``grad_norm``/``lr``/``val_loss`` from the keys named in the
constructor (a trial inside uses ``losswatch.client.integrations.torch.global_grad_norm`` to report
its grad-norm cheaply). A trial's monitor is flushed and closed when the trial completes or fails.

Acting: a driver cannot reach into a trial's optimizer. :meth:`LosswatchTuneCallback.stopper`
returns a Tune ``Stopper`` that ends a trial when losswatch advises ``stop`` (e.g. a NaN loss), or,
with ``stop_on_critical=True``, whenever the trial's health is critical: a sweep stops spending
CPU on a lost trial. To scale a trial's LR in place, use the torch helper with ``act=True`` inside
the trainable.

ray is imported only when ``LosswatchTuneCallback`` is first accessed.
"""

from __future__ import annotations

from typing import Any

from ._common import NO_LOSS_AFTER, NoLossWatch, lazy_class, number, plain_metadata

__all__ = ["LosswatchTuneCallback"]


def _build() -> type:
    from ray.tune import Callback
    from ray.tune.stopper import Stopper

    class _LosswatchStopper(Stopper):
        """Stops a trial whose losswatch run says stop (or is critical, when asked)."""

        def __init__(self, callback: Any, stop_on_critical: bool) -> None:
            self.callback = callback
            self.stop_on_critical = stop_on_critical

        def __call__(self, trial_id: str, result: dict) -> bool:
            mon = self.callback.monitors.get(trial_id)
            if mon is None:
                return False
            rec = getattr(mon, "recommendation", None) or {}
            if rec.get("type") == "stop":
                return True
            return self.stop_on_critical and getattr(mon, "health", "ok") == "critical"

        def stop_all(self) -> bool:
            return False

    class LosswatchTuneCallback(Callback):
        """Stream every Ray Tune trial's results to losswatch, one run per trial.

        Parameters
        ----------
        url, token : str, optional
            The service (default ``$LOSSWATCH_URL``); with none, detection runs on the driver.
        project : str, optional
            Override the project (default: the experiment's name).
        loss_key, grad_norm_key, lr_key, val_loss_key : str
            Result keys read for each field (a missing key sends nothing for that field).
        step_key : str or None
            Result key of the step; None: ``"step"`` when present, else ``training_iteration``.
        monitor_options : dict, optional
            Any other Monitor argument (flush_interval, ...).
        warn_no_loss_after : (results, seconds) or None
            Say once per trial when none of its results has carried ``loss_key`` after this many
            results and seconds (both); None: never.
        """

        def __init__(self, url: str | None = None, *, token: str | None = None, project: str | None = None,
                     loss_key: str = "loss", grad_norm_key: str = "grad_norm", lr_key: str = "lr",
                     val_loss_key: str = "val_loss", step_key: str | None = None,
                     monitor_options: dict | None = None,
                     warn_no_loss_after: tuple[int, float] | None = NO_LOSS_AFTER) -> None:
            self.url = url
            self.token = token
            self.project = project
            self.keys = {"loss": loss_key, "grad_norm": grad_norm_key, "lr": lr_key, "val_loss": val_loss_key}
            self.step_key = step_key
            self.monitor_options = dict(monitor_options or {})
            self.monitors: dict[str, Any] = {}  # trial id -> Monitor
            self.closed: dict[str, Any] = {}  # trial id -> Monitor, after the trial ended
            self.warn_no_loss_after = warn_no_loss_after
            self._no_loss: dict[str, NoLossWatch] = {}  # trial id -> its watch

        def stopper(self, stop_on_critical: bool = False) -> Any:
            """A Tune Stopper that ends trials losswatch advises to stop (see module doc)."""
            return _LosswatchStopper(self, stop_on_critical)

        def _monitor(self, trial: Any) -> Any:
            mon = self.monitors.get(trial.trial_id)
            if mon is None:
                from ..monitor import Monitor

                project = self.project or trial.experiment_dir_name
                meta = plain_metadata({"framework": "ray_tune", "experiment": trial.experiment_dir_name,
                                  "trial_name": str(trial), "config": trial.config})
                mon = Monitor(run_id=trial.trial_id, url=self.url, project=project, meta=meta,
                              token=self.token, **self.monitor_options)
                self.monitors[trial.trial_id] = mon
            return mon

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._monitor(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            key = self.step_key or ("step" if "step" in result else "training_iteration")
            step = result.get(key)
            if isinstance(step, float) and step.is_integer():
                step = int(step)
            if not isinstance(step, int) or isinstance(step, bool):
                return
            fields = {f: number(result.get(k)) for f, k in self.keys.items() if k in result}
            mon = self._monitor(trial)
            mon.log(step, **fields)
            watch = self._no_loss.get(trial.trial_id)
            if watch is None:
                watch = self._no_loss[trial.trial_id] = NoLossWatch(
                    f"its results carry no {self.keys['loss']!r} key (keys: {', '.join(sorted(result)[:12])}): "
                    f"report the loss under that key or pass loss_key=", self.warn_no_loss_after)
            watch.record(mon, fields.get("loss"))

        def _end(self, trial: Any, finished: bool = True) -> None:
            mon = self.monitors.pop(trial.trial_id, None)
            self._no_loss.pop(trial.trial_id, None)
            if mon is not None:
                mon.close(finished=finished)
                self.closed[trial.trial_id] = mon

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial, finished=False)  # a failed trial is not "finished": its silence may page

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            for trial in trials:
                self._end(trial)

    LosswatchTuneCallback.__module__ = __name__
    return LosswatchTuneCallback


__getattr__ = lazy_class(__name__, "LosswatchTuneCallback", _build)
