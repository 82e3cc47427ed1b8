"""Training settings: TrainConfig, the recipes and config files, merged recipe < file < flags."""
