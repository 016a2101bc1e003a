"""Facet's cross-encoder rerankers: MiniLM trained on general relevance and RAR-b reasoning data,
calibrated by temperature scaling, exported to ONNX (issue #14). See `training.rerank.build`."""
