"""Running Facet: the model repository, the local launcher and the `facet` command."""
