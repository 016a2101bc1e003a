"""Phenotype editing: a factorised face generator, its encoders, attribute edits with a measured report."""
