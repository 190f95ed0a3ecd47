"""Code that travels inside registered models; it imports nothing from automl."""
