"""SAE analysis service."""
