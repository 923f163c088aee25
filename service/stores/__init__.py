"""Where runs, series, alerts and detector state live: in-process memory or Redis."""
