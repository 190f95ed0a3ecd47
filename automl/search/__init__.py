"""The search: settings, the space, samplers and pruners, the objective, the trial queue,
job processes, sessions, the runner and the conclusion. Optuna's internals are touched in
``automl.stores`` only; ``space`` is the only caller of ``trial.suggest_*``."""
