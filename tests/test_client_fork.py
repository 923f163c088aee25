"""Fork safety: children (DataLoader workers, pools) neither duplicate the parent's records nor
hang on a lock or thread inherited from it."""

import os
import signal
import time
import warnings

import torch

from losswatch.client import Monitor
from service_helpers import get_json as get

torch.set_num_threads(1)


def wait_child(pid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the child hung")


def test_child_is_disabled_by_default_and_parent_records_are_not_duplicated(service_proc):
    mon = Monitor(run_id="fork-default", url=service_proc, flush_interval=5.0)
    for step in range(100):
        mon.log(step, loss=1.0, lr=0.1)  # still buffered when the fork happens
    pid = os.fork()
    if pid == 0:  # child: whatever happens, leave with os._exit
        code = 1
        try:
            for step in range(1000, 1100):
                mon.log(step, loss=2.0)
            ok = mon.flush(5)
            mon.close()
            code = 0 if ok else 3
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    for step in range(100, 200):
        mon.log(step, loss=1.0, lr=0.1)
    assert mon.flush(20)
    mon.close()
    assert get(service_proc, "/v1/runs/fork-default/steps")["series"]["step"] == list(range(200))
    assert get(service_proc, "/v1/runs/fork-default")["duplicates"] == 0


def test_child_with_in_child_fresh_sends_its_own_steps_only(service_proc):
    mon = Monitor(run_id="fork-fresh", url=service_proc, in_child="fresh", flush_interval=5.0)
    for step in range(50):
        mon.log(step, loss=1.0)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for step in range(1000, 1050):
                mon.log(step, loss=2.0)
            code = 0 if mon.flush(10) else 3
            mon.close()
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    assert mon.flush(20)
    mon.close()
    steps = get(service_proc, "/v1/runs/fork-fresh/steps")["series"]["step"]
    assert steps == list(range(50)) + list(range(1000, 1050))
    assert get(service_proc, "/v1/runs/fork-fresh")["duplicates"] == 0


def test_fork_while_the_sender_is_stuck_in_a_request_does_not_hang_the_child(service_factory):
    srv = service_factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = Monitor(run_id="fork-stuck", url=srv.url, timeout=3.0, in_child="fresh")
        mon.log(0, loss=1.0)
        assert mon.flush(20)
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            mon.log(1, loss=1.0)
            mon.flush(0.5)  # the sender is now blocked waiting for an answer, holding its state
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    # before its own sender exists: must not touch the parent's (locks held)
                    mon.flush(0.2)
                    mon.report_action(1, {"type": "stop", "reason": "test"}, applied=False)
                    mon.log(2, loss=1.0)  # a fresh sender in the child
                    mon.flush(0.2)
                    mon.close(timeout=0.2)
                    code = 0
                finally:
                    os._exit(code)
            assert wait_child(pid, timeout=20) == 0
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert mon.flush(20)
        mon.close()


class LoggingDataset(torch.utils.data.Dataset):
    """A dataset whose code logs through the (inherited) monitor, as library code might."""

    def __init__(self, mon):
        self.mon = mon

    def __len__(self):
        return 64

    def __getitem__(self, i):
        self.mon.log(10_000 + i, loss=123.0)  # in a worker: must not reach the run
        return torch.tensor([float(i)]), torch.tensor([2.0 * i])


def test_dataloader_workers_do_not_duplicate_or_add_records(service_proc):
    mon = Monitor(run_id="fork-dataloader", url=service_proc, flush_interval=5.0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(LoggingDataset(mon), batch_size=8, num_workers=2,
                                         multiprocessing_context="fork")
    step = 0
    for epoch in range(3):  # workers are forked at each epoch, with records still buffered
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(step, loss=loss, lr=1e-3)
            step += 1
    assert mon.flush(20)
    mon.close()
    assert get(service_proc, "/v1/runs/fork-dataloader/steps")["series"]["step"] == list(range(step))
    assert get(service_proc, "/v1/runs/fork-dataloader")["duplicates"] == 0
