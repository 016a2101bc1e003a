"""Facet's gRPC model servers: a shared runtime, inference backends and one package per capability."""
