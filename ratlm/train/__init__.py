"""Training: recipes, the loop, checkpoints, distributed helpers, metrics (`ratlm train`, `ratlm prepare`)."""
