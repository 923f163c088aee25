"""Learning-rate tooling that needs storage or processes: policy database, evaluator, search."""
