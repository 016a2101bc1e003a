"""What the embedding export writes into the model repository and this service reads."""

from __future__ import annotations


class Kind:
    """Model kinds (`facet.json` "kind")."""

    EMBEDDING = "embedding"  # input_ids, attention_mask int64 [n, t] -> sentence embeddings float32 [n, dimension]


class Prop:
    """Property keys (`facet.json` "properties")."""

    DIMENSION = "dimension"
    MAX_SEQ_LENGTH = "max_seq_length"  # tokens; longer texts are truncated or rejected
    POOLING = "pooling"


class File:
    """Keys of the files stored beside an embedding model (`facet.json` "files")."""

    TOKENIZER = "tokenizer"  # tokenizer.json (Hugging Face tokenizers)
