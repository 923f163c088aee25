"""Every example in the detectors' docstrings still gives what it says (docs/detectors.md is
generated from them: they are the rules' reference)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import losswatch.detectors as detectors

#: every module of the package, those of its subpackages (the divergence rules) included
MODULES = sorted(m.name for m in pkgutil.walk_packages(detectors.__path__, "losswatch.detectors."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_detectors_with_examples_include_the_lr_rules():
    attempted = {name: doctest.testmod(importlib.import_module(f"losswatch.detectors.{name}")).attempted
                 for name in ("slow_progress", "sgd_efficiency", "engine")}
    assert all(n > 0 for n in attempted.values()), attempted
