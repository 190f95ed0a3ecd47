"""Training: the typed trial configuration, the network builder, augmentation, the one
training loop and the recipe that trains a configuration. Knows neither Optuna nor MLflow."""
