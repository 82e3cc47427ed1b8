"""Files: atomic writes, the checkpoint schema, run-folder files, CSV tables and plots."""
