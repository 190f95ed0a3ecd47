"""Training: the typed trial configuration, the network builder, augmentation, the one
training loop (``loop``), training one configuration (``train``) and the state a run
resumes from (``state``). Knows neither Optuna nor MLflow."""
