"""losswatch client: stream per-step loss, grad-norm and LR to a losswatch service (standard library only).

    from losswatch.client import Monitor
    with Monitor(run_id="r1", url="http://127.0.0.1:8000") as mon:
        for step in range(n):
            ...
            mon.log(step, loss=loss, grad_norm=gn, lr=lr)
"""

from .monitor import Monitor
from .version import __version__

__all__ = ["Monitor", "__version__"]
