"""Embedding retrieval: embed text, keep collections of documents, search them."""
