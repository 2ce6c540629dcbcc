"""Models side of decayrec: language-model backends, baselines, the scorer, metrics,
evaluation, the promotion gate and the model registry."""
