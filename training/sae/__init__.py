"""Sparse autoencoders on a language model's residual stream: architectures, training, analysis.

After "Sparse Autoencoders Do Not Find Canonical Units of Analysis" (Leask et al., ICLR 2025).
"""
