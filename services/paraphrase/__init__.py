"""Paraphrase generation: n diverse paraphrases of a sentence from a DDL + VSAR Transformer."""
