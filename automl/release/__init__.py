"""Releasing models: publish a trained network as a registered version, promote and roll
back aliases, retrain on new data, check drift, predict on files and export."""
