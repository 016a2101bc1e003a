"""What the paraphrase export writes into the model repository and the paraphrase service reads.

A paraphraser is a Transformer encoder-decoder (`training.paraphrase.model`) served as two ONNX
models in the repository, so the service decodes step by step over the backend interface (and so
on every backend: ONNX Runtime in-process, Triton, Ray Serve):

``<name>-encoder`` (kind `Kind.ENCODER`), run once per source sentence::

    inputs:  input_ids        int64   [batch, src]               [CLS] source [SEP], right-padded with [PAD] (0)
             attention_mask   int64   [batch, src]               1 for real tokens, 0 for padding
    outputs: cross_keys       float32 [batch, layers, heads, src, head_dim]   every decoder layer's
             cross_values     float32 [batch, layers, heads, src, head_dim]   cross-attention keys/values

``<name>`` (kind `Kind.DECODER_STEP`), run once per generated token; it holds the paraphraser's
metadata (tokenizer, training setting, metrics) and names its encoder (`Prop.ENCODER_MODEL`)::

    inputs:  input_ids        int64   [batch, 1]      the previous token ([CLS] at the first step)
             position_ids     int64   [batch, 1]      its position: 0 for [CLS], then 1, 2, ...
             past_keys        float32 [batch, layers, heads, past, head_dim]  self-attention cache
             past_values      float32 [batch, layers, heads, past, head_dim]
             past_mask        int64   [batch, past]   1 where the cache holds a real earlier token
             cross_keys       float32 [batch, layers, heads, src, head_dim]   from the encoder
             cross_values     float32 [batch, layers, heads, src, head_dim]
             attention_mask   int64   [batch, src]    the encoder's attention_mask
    outputs: log_probs        float32 [batch, vocab]  log-softmax of the next token's logits
             present_keys     float32 [batch, layers, heads, past + 1, head_dim]  past + this step
             present_values   float32 [batch, layers, heads, past + 1, head_dim]

`past` is at least 1: the first step gets one all-zero slot with `past_mask` 0, so no tensor has a
zero-length axis (Triton and some ONNX Runtime kernels reject those). Every axis but the batch
axis may differ between rows of different calls: the dynamic batcher right-pads `past` and `src`
with zeros (masked out by `past_mask` / `attention_mask`), so a row's own cache is
`present[..., :past_own, :]` followed by `present[..., -1:, :]`. Decoding stops at [SEP] or at
`Prop.MAX_LENGTH` tokens.

Token ids are those of the tokenizer stored beside the decoder step (`File.TOKENIZER`): the uncased
BERT WordPiece of all-MiniLM-L6-v2 (bert-base-uncased's vocabulary, the paper's tokenizer),
restricted to the pieces of the training corpus plus every single-character piece, so the
output layer is small enough for a CPU; a word segments exactly as with the full vocabulary
whenever its pieces occur in the corpus. [PAD] = 0, [UNK], [CLS] (begin), [SEP] (end).
"""

from __future__ import annotations


class Kind:
    """Model kinds (`facet.json` "kind")."""

    ENCODER = "paraphrase-encoder"  # input_ids, attention_mask -> cross_keys, cross_values
    DECODER_STEP = "paraphraser"  # one decoding step with a KV cache; the model users name


class Tensor:
    """Input and output names of the two ONNX graphs."""

    INPUT_IDS = "input_ids"
    ATTENTION_MASK = "attention_mask"
    POSITION_IDS = "position_ids"
    PAST_KEYS = "past_keys"
    PAST_VALUES = "past_values"
    PAST_MASK = "past_mask"
    CROSS_KEYS = "cross_keys"
    CROSS_VALUES = "cross_values"
    LOG_PROBS = "log_probs"
    PRESENT_KEYS = "present_keys"
    PRESENT_VALUES = "present_values"


class Prop:
    """Property keys (`facet.json` "properties") of a paraphraser's decoder step."""

    ENCODER_MODEL = "encoder_model"  # repository name of its encoder, e.g. "ddl-vsar-quora-encoder"
    MAX_LENGTH = "max_length"  # int: most tokens of a sentence, [CLS]/[SEP] excluded (the paper: 20)
    LAYERS = "layers"  # int: decoder layers (the cache's axis 1)
    HEADS = "heads"  # int: attention heads (the cache's axis 2)
    HEAD_DIM = "head_dim"  # int: the cache's last axis
    VOCAB_SIZE = "vocab_size"  # int: log_probs' last axis
    SPECIAL_IDS = "special_ids"  # {"pad": 0, "unk": ..., "bos": ..., "eos": ...}
    SETTING = "setting"  # "ddl" | "vsar" | "ddl+vsar" | "krl": how it was trained
    TRAINING_DATA = "training_data"  # {"dataset", "labelled_pairs", "unlabelled_sources", "label_fraction"}
    TRAINING = "training"  # the training config (dict) and time_s
    METRICS = "metrics"  # test-split results: bleu1..4, sacrebleu, self_bleu, ibleu, rouge1/2/L
    ARCHITECTURE = "architecture"  # the model config (dict: d_model, layers, heads, ...)


class File:
    """Keys of the files stored beside the decoder step (`facet.json` "files")."""

    TOKENIZER = "tokenizer"  # tokenizer.json (Hugging Face tokenizers): the shortlisted WordPiece
    CHECKPOINT = "checkpoint"  # the PyTorch weights (safetensors) and config the ONNX came from


def encoder_name(paraphraser: str) -> str:
    """The repository name of a paraphraser's encoder: `<paraphraser>-encoder`."""
    return f"{paraphraser}-encoder"
