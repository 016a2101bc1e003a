"""What every Facet service shares: config, errors, interceptor, metrics, server lifecycle."""
