"""losswatch client: stream per-step loss, grad-norm and LR to a losswatch service (standard library only)."""
