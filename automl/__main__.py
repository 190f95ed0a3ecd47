from automl.cli import run

run()
