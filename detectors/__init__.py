"""Online training-health detectors: pure computation, numpy allowed, no I/O."""
