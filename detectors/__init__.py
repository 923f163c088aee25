"""Online training-health detectors: pure computation, numpy allowed, no I/O.

>>> from losswatch.detectors import Engine, Batch, Record, Alert, Action
"""

from .base import Detector
from .batch import Batch
from .engine import Engine
from .types import Action, Alert, Record

__all__ = ["Engine", "Batch", "Record", "Alert", "Action", "Detector"]
