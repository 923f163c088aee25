"""One module per ``losswatch`` sub-command (see losswatch.service.cli)."""
