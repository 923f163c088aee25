"""``losswatch demo``: watch losswatch catch a run whose learning rate is far too high.

It starts the service (``losswatch serve`` with the in-memory store, in a child process, on
127.0.0.1), then trains a small real model with numpy only: a 2-32-32-1 tanh MLP fitted by
mini-batch gradient descent (squared loss) to two interleaved spirals, generated
deterministically. The LR warms up linearly to a peak about 30x higher than this model tolerates,
the classic way large runs diverge (BLOOM 104B diverged at the end of its warmup). Every step is
streamed through the real ``losswatch.client.Monitor``; alerts and advice are printed as they
arrive. Then the service is left running for you to explore until Ctrl-C.

Options: ``--steps``, ``--peak-lr``, ``--step-delay`` (pace the run so the alerts visibly arrive
while it trains), ``--port`` (0 = a free one), ``--url`` (stream to a service that already runs
instead of starting one), ``--no-wait`` (stop the service and exit at the end: tests, CI).

The service it starts never outlives it. SIGINT (Ctrl-C) and SIGTERM stop the service and end
the demo (status 0 while it waits for you, 128 + the signal's number while it trains). If the
demo dies without a word (``kill -9``, a crashed terminal, a parent that kills its whole tree
uncleanly), the service notices through a pipe: its stdin is a pipe whose only write end the
demo holds, so the kernel closes it when the demo goes, however it goes, and a thread in the
service that waits for end-of-file on stdin then stops it with SIGTERM. Chosen over Linux's
``PR_SET_PDEATHSIG`` (Linux only, and it fires when the *thread* that started the child exits,
not the process) and over polling ``os.getppid()`` (a delay, and the parent's pid can be reused
or be a sub-reaper's): the pipe is immediate, needs no polling and works on every POSIX system.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--peak-lr", type=float, default=3.0,
                   help="LR at the end of the warmup (default 3.0; about 0.1 trains this model well)")
    p.add_argument("--warmup-steps", type=int, default=200, help="linear warmup length (default 200)")
    p.add_argument("--step-delay", type=float, default=0.02,
                   help="seconds to sleep per step so alerts arrive while it trains (default 0.02)")
    p.add_argument("--host", default="127.0.0.1", help="where the embedded service listens")
    p.add_argument("--port", type=int, default=0, help="its port (default 0: a free one)")
    p.add_argument("--url", help="use this running service instead of starting one")
    p.add_argument("--run-id", help="run id (default demo-spirals-<time>)")
    p.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    p.add_argument("--no-wait", action="store_true",
                   help="stop the service and exit when training ends (default: keep it running until Ctrl-C)")


# ----------------------------------------------------------------------------- the model
def two_spirals(n_per_class: int = 256, noise: float = 0.05, seed: int = 0):
    """Two interleaved spirals in [-1, 1]^2, labels -1 / +1 (deterministic for a seed)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    t = np.sqrt(rng.rand(n_per_class)) * 3 * np.pi
    arm = np.c_[t * np.cos(t), t * np.sin(t)] / (3 * np.pi)
    x = np.r_[arm, -arm] + noise * rng.randn(2 * n_per_class, 2)
    y = np.r_[-np.ones(n_per_class), np.ones(n_per_class)]
    return x, y


class MLP:
    """2 -> hidden -> hidden -> 1, tanh, squared loss, plain gradient descent (numpy)."""

    def __init__(self, hidden: int = 32, seed: int = 0) -> None:
        import numpy as np

        rng = np.random.RandomState(seed)
        self.params = {
            "W1": rng.randn(2, hidden) * 2.0, "b1": np.zeros(hidden),
            "W2": rng.randn(hidden, hidden) / np.sqrt(hidden), "b2": np.zeros(hidden),
            "W3": rng.randn(hidden) / np.sqrt(hidden), "b3": np.zeros(()),
        }

    def loss_and_grads(self, x, y):
        import numpy as np

        p = self.params
        h1 = np.tanh(x @ p["W1"] + p["b1"])
        h2 = np.tanh(h1 @ p["W2"] + p["b2"])
        r = h2 @ p["W3"] + p["b3"] - y
        loss = 0.5 * float(np.mean(r * r))
        d = r / len(y)
        dh2 = np.outer(d, p["W3"]) * (1 - h2 ** 2)
        dh1 = dh2 @ p["W2"].T * (1 - h1 ** 2)
        grads = {"W3": h2.T @ d, "b3": np.asarray(d.sum()), "W2": h1.T @ dh2, "b2": dh2.sum(0),
                 "W1": x.T @ dh1, "b1": dh1.sum(0)}
        return loss, grads

    def sgd_step(self, grads, lr: float) -> None:
        for k, g in grads.items():
            self.params[k] -= lr * g


# ----------------------------------------------------------------------------- the service
def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _get(url: str, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET through the client's own HTTP connection; ServiceError when the service is unreachable."""
    from losswatch.client.http import Connection

    t = Connection(url, timeout=timeout)
    try:
        r = t.request("GET", path)
        return r.status, r.json()
    finally:
        t.close()


def _start_service(host: str, port: int) -> tuple[subprocess.Popen, str]:
    from losswatch.client.transport import ServiceError

    port = port or _free_port(host)
    url = f"http://{host}:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LOSSWATCH_TOKENS", None)  # the demo's service is local and open
    # stdin=PIPE: the pipe's write end stays in this process only (close_fds), see the docstring
    proc = subprocess.Popen([sys.executable, "-c", _SERVICE_ENTRY, "--host", host, "--port", str(port)],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"the service exited with code {proc.returncode}:\n{err[-2000:]}")
            try:
                if _get(url, "/readyz", timeout=1.0)[0] == 200:
                    # keep draining its stderr so a chatty service can never block on a full pipe
                    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
                    return proc, url
            except ServiceError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the service did not become ready on {url} within 60 s")
    except BaseException:  # not ready, or stopped while waiting: the half-started service goes too
        _stop_service(proc)
        raise


_SERVICE_ENTRY = "import sys; from losswatch.service.commands.demo import serve_while_parent_lives as s; s(sys.argv[1:])"


def serve_while_parent_lives(serve_args: list[str]) -> None:
    """The demo's service process: ``losswatch serve SERVE_ARGS``, stopped (SIGTERM, so uvicorn
    shuts down cleanly) as soon as stdin reaches end-of-file, i.e. when the demo is gone."""

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns only at end-of-file: the demo closed the pipe or died
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, name="losswatch-demo-parent-watch", daemon=True).start()
    from losswatch.service.cli import main

    sys.exit(main(["serve", *serve_args]))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEMO_PROJECT = "demo"


class _Signalled(KeyboardInterrupt):
    """A stop signal, raised where the demo is (a KeyboardInterrupt, so one path handles both)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Signalled(signum)


def _stop_service(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ----------------------------------------------------------------------------- printing
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _action_text(action: dict | None) -> str:
    if not action or action.get("type") in (None, "none"):
        return "none"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in action.items() if k not in ("type", "reason"))
    return f"{action['type']}({params})" if params else action["type"]


def _say(line: str) -> None:
    print(line, flush=True)


def _alert_lines(alert: dict) -> list[str]:
    state = "RESOLVED" if alert.get("resolved_step") is not None else "ALERT"
    src = "caught in-process" if str(alert.get("detector", "")).startswith("client.") else "from the service"
    lines = [f"  >> {state} {alert.get('severity', '?').upper():8s} {alert.get('kind')} at step "
             f"{alert.get('step')} ({src}): {alert.get('message', '')}"]
    if state == "ALERT":
        action = alert.get("action") or {}
        lines.append(f"     advice: {_action_text(action)}" +
                     (f" - {action['reason']}" if action.get("reason") else ""))
    else:
        lines[0] += f" (resolved at step {alert['resolved_step']})"
    return lines


# ----------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    try:
        import numpy as np

        from losswatch.service.api.page import RUN_PAGE_PREFIX  # FastAPI
    except ImportError as e:
        print(f"losswatch demo needs the server extra ({e.name} is missing): pip install 'losswatch[server]'",
              file=sys.stderr)
        return 2
    from losswatch.client import Monitor

    # installed, not inherited: a shell starts a background job with SIGINT ignored
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS} if main_thread else {}
    proc = None
    waiting = False  # True once training is over and the demo only waits for a stop
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            _say("losswatch demo: starting the service (embedded, in-memory store) ...")
            try:
                proc, url = _start_service(args.host, args.port)
            except RuntimeError as e:
                print(f"losswatch demo: {e}", file=sys.stderr)
                return 1
        run_id = args.run_id or f"demo-spirals-{int(time.time())}"
        _say(f"open {url}{RUN_PAGE_PREFIX}/{run_id}")
        _say(f"losswatch demo: service at {url}; run {run_id}")
        _say(f"training a 2-32-32-1 tanh MLP on two spirals (numpy, mini-batch SGD, squared loss); "
             f"the LR warms up over {args.warmup_steps} steps to {args.peak_lr:g}, about "
             f"{args.peak_lr / 0.1:.0f}x what this model tolerates")
        seen: list[dict] = []
        lock = threading.Lock()
        # the demo prints each alert itself (with its advice, on stdout): the client's own alert
        # lines on the `losswatch` logger would say the same twice
        logging.getLogger("losswatch").setLevel(logging.ERROR)

        def on_alert(alert: dict) -> None:  # runs in the monitor's background thread
            with lock:
                seen.append(alert)
                for line in _alert_lines(alert):
                    _say(line)

        x, y = two_spirals(seed=args.seed)
        model = MLP(seed=args.seed)
        rng = np.random.RandomState(args.seed + 1)
        meta = {"task": "two-spirals", "model": "mlp-2-32-32-1-tanh", "optimizer": "sgd",
                "batch_size": 64, "tags": {"source": "losswatch demo"}}
        last_advice = None
        with Monitor(run_id=run_id, url=url, project=DEMO_PROJECT, meta=meta, on_alert=on_alert) as mon:
            with np.errstate(all="ignore"):  # let overflow turn into inf/NaN, as it would on a GPU
                for step in range(args.steps):
                    lr = 0.02 + (args.peak_lr - 0.02) * min(1.0, step / max(1, args.warmup_steps))
                    idx = rng.randint(0, len(x), 64)
                    loss, grads = model.loss_and_grads(x[idx], y[idx])
                    grad_norm = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in grads.values())))
                    mon.log(step, loss=loss, grad_norm=grad_norm, lr=lr)
                    model.sgd_step(grads, lr)
                    if step % 20 == 0:
                        _say(f"step {step:4d}  loss {loss:<10.4g} grad-norm {grad_norm:<10.4g} lr {lr:.3g}")
                    advice = mon.recommendation
                    if advice != last_advice:
                        last_advice = advice
                        _say(f"  >> current advice at step {step}: {_action_text(advice)}")
                    if args.step_delay > 0:
                        time.sleep(args.step_delay)
            mon.flush(10)
        with lock:
            raised = [a for a in seen if a.get("resolved_step") is None]
        kinds = sorted({a["kind"] for a in raised})
        warned = [a["step"] for a in raised if a["kind"] in ("divergence", "grad_explosion")]
        lost = [a["step"] for a in raised if a["kind"] == "nan"]
        if warned and lost and min(warned) < min(lost):
            _say(f"lead time: the first divergence warning (step {min(warned)}) came "
                 f"{min(lost) - min(warned)} steps before the loss stopped being finite (step {min(lost)})")
        in_demo = f"project={DEMO_PROJECT}"     # a run is named by its project and its run id
        status, summary = _get(url, f"/v1/runs/{run_id}?{in_demo}")
        if status == 200:
            _say(f"done: {summary.get('n_steps')} steps stored, health {summary.get('health')}, "
                 f"alert kinds raised: {', '.join(kinds) or 'none'}; "
                 f"advice: {_action_text(summary.get('recommendation'))}")
        else:
            _say(f"done (the service answered {status} for the run summary)")
        _say("explore:")
        for path, what in (("/docs", "the API, try it out"), (f"/v1/runs/{run_id}?{in_demo}", "the run: health, advice"),
                           (f"/v1/runs/{run_id}/alerts?{in_demo}", "its alerts"),
                           (f"/v1/runs/{run_id}/steps?max_points=200&{in_demo}", "the series"),
                           ("/metrics", "Prometheus metrics")):
            _say(f"  {url}{path:<48s} {what}")
        if args.no_wait or proc is None:
            return 0
        _say("the service keeps running; press Ctrl-C to stop it")
        waiting = True
        proc.wait()
        return 0
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM, through _raise_stop
        _say("\nstopping the service" if proc is not None else "\nstopped")
        return 0 if waiting else 128 + getattr(stop, "signum", signal.SIGINT)
    finally:
        _stop_service(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
