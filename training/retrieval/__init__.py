"""Embedding models for retrieval: export sentence-transformers models to ONNX; RAR-b evaluation."""
