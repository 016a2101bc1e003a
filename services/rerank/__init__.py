"""Reranking: score and order candidate documents for a query with a cross-encoder."""
