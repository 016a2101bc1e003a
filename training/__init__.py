"""Training, export and evaluation of Facet's models (PyTorch, Ray). Needs the `training` extra."""
