"""The paraphraser export (`training.paraphrase.export`): the encoder and decoder-step ONNX graphs
compute what the PyTorch model computes (numbers, a padded batch of rows at different steps, greedy
and beam tokens on real Quora sentences), are registered with the catalog's tensors, properties and
files, and a graph that computes something else fails the export."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer

from services.backends.onnx_session import create_session
from services.model_repository import Key, ModelRepository, ModelVersion, TensorSpec
from services.paraphrase.catalog import File, Kind, Prop, Tensor, encoder_name
from tests.training.paraphrase.test_generate import MAX_LENGTH, fit_tiny_paraphraser
from training.paraphrase import export
from training.paraphrase.data import load_pairs
from training.paraphrase.export import (
    PARITY_MAX_ABS,
    ParityError,
    export_graphs,
    export_paraphraser,
    load_pytorch_model,
    parity_check,
)
from training.paraphrase.generate import encode_sources, greedy
from training.paraphrase.model import SOURCE_TO_TARGET, ParaphraseTransformer

NAME = "tiny-paraphraser"
PARITY_SENTENCES = 48  # real Quora test questions (the real build: a few hundred)
CALLER_PROPERTIES = {
    Prop.SETTING: "ddl",
    Prop.TRAINING_DATA: {"dataset": "quora", "labelled_pairs": 200, "unlabelled_sources": 0, "label_fraction": 1.0},
    Prop.TRAINING: {"steps": 80, "time_s": 5.0},
    Prop.METRICS: {"bleu4": 1.0},
    Prop.MAX_LENGTH: MAX_LENGTH,
}


def quora_test_sources(count: int, offset: int = 0) -> list[str]:
    return [p[0] for p in load_pairs("quora", "test")[offset : offset + count]]


@pytest.fixture(scope="module")
def tiny() -> tuple[ParaphraseTransformer, Tokenizer]:
    return fit_tiny_paraphraser()


@pytest.fixture(scope="module")
def exported(tiny: tuple[ParaphraseTransformer, Tokenizer], tmp_path_factory: pytest.TempPathFactory) -> ModelVersion:
    model, tokenizer = tiny
    repository = ModelRepository(tmp_path_factory.mktemp("paraphrase-export-models"))
    checkpoint = tmp_path_factory.mktemp("train") / "last.pt"
    torch.save(model.state_dict(), checkpoint)
    return export_paraphraser(
        model, tokenizer, repository, NAME, properties=CALLER_PROPERTIES, checkpoint=checkpoint,
        parity_sentences=quora_test_sources(PARITY_SENTENCES), work_dir=tmp_path_factory.mktemp("paraphrase-export"),
    )  # fmt: skip


def sessions(entry: ModelVersion) -> tuple[object, object]:
    repository = ModelRepository(entry.path.parents[1])
    encoder = repository.get(entry.properties[Prop.ENCODER_MODEL])
    return create_session(encoder.model_file, providers="cpu"), create_session(entry.model_file, providers="cpu")


def test_registers_the_encoder_and_the_decoder_step(
    exported: ModelVersion, tiny: tuple[ParaphraseTransformer, Tokenizer]
) -> None:
    model, tokenizer = tiny
    c = model.config
    repository = ModelRepository(exported.path.parents[1])
    encoder = repository.get(encoder_name(NAME))
    assert (exported.name, exported.kind, encoder.kind) == (NAME, Kind.DECODER_STEP, Kind.ENCODER)
    props = exported.properties
    for key, value in CALLER_PROPERTIES.items():
        assert props[key] == value
    assert props[Prop.ENCODER_MODEL] == encoder.name
    assert (props[Prop.LAYERS], props[Prop.HEADS], props[Prop.HEAD_DIM], props[Prop.VOCAB_SIZE]) == (
        c.decoder_layers, c.heads, c.d_model // c.heads, tokenizer.get_vocab_size()
    )  # fmt: skip
    assert props[Prop.SPECIAL_IDS] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert props[Prop.ARCHITECTURE] == c.to_dict()
    # the declared tensors are the graphs' own, by the catalog's names
    encoder_session, step_session = sessions(exported)
    for entry, session in ((encoder, encoder_session), (exported, step_session)):
        for key, actual in ((Key.INPUTS, session.get_inputs()), (Key.OUTPUTS, session.get_outputs())):
            specs = [TensorSpec.from_dict(t) for t in entry.metadata[key]]
            assert [s.name for s in specs] == [a.name for a in actual]
            assert [s.dtype for s in specs] == [
                {"tensor(int64)": "int64", "tensor(float)": "float32"}[a.type] for a in actual
            ]
    assert [t.name for t in step_session.get_inputs()] == [
        Tensor.INPUT_IDS, Tensor.POSITION_IDS, Tensor.PAST_KEYS, Tensor.PAST_VALUES, Tensor.PAST_MASK,
        Tensor.CROSS_KEYS, Tensor.CROSS_VALUES, Tensor.ATTENTION_MASK,
    ]  # fmt: skip
    assert (repository.root / NAME / "config.pbtxt").is_file() and (
        repository.root / encoder.name / "config.pbtxt"
    ).is_file()
    assert exported.metadata[Key.SOURCE].endswith("last.pt") and len(exported.metadata[Key.SOURCE_SHA256]) == 64


def test_stored_tokenizer_and_checkpoint_are_the_model(
    exported: ModelVersion, tiny: tuple[ParaphraseTransformer, Tokenizer]
) -> None:
    model, tokenizer = tiny
    stored = Tokenizer.from_file(str(exported.file(File.TOKENIZER)))
    texts = quora_test_sources(16, offset=100)
    assert encode_sources(stored, texts, MAX_LENGTH) == encode_sources(tokenizer, texts, MAX_LENGTH)
    reloaded, reloaded_tokenizer = load_pytorch_model(exported)
    assert reloaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    sources = encode_sources(stored, texts, MAX_LENGTH)
    assert greedy(reloaded, sources, MAX_LENGTH) == greedy(model, sources, MAX_LENGTH)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_parity_is_recorded_and_holds(exported: ModelVersion) -> None:
    parity = exported.metadata[Key.PARITY]
    assert parity["passed"] and parity["failures"] == []
    assert parity["sentences"] == PARITY_SENTENCES
    assert set(parity["max_abs_diff"]) == {"cross_keys_values", "log_probs", "present_keys_values", "padded_batch"}
    assert all(0 <= v <= PARITY_MAX_ABS for v in parity["max_abs_diff"].values())
    assert parity["greedy"]["mismatches"] == parity["greedy"]["ties"]
    assert parity["beam"]["width"] == 4 and parity["beam"]["unexplained"] <= 0.01 * PARITY_SENTENCES
    repository = ModelRepository(exported.path.parents[1])
    assert repository.get(encoder_name(NAME)).metadata[Key.PARITY] == parity


def onnx_step(session: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run([Tensor.LOG_PROBS, Tensor.PRESENT_KEYS, Tensor.PRESENT_VALUES], feed)  # type: ignore[attr-defined, no-any-return]


def torch_rows(model: ParaphraseTransformer, sources: list[list[int]], steps: list[int]) -> list[dict[str, np.ndarray]]:
    """Per source, alone, the step graph's feed after `steps[i]` greedy steps in PyTorch (0 steps:
    the first step's masked zero slot), with the source's cross keys/values."""
    c = model.config
    feeds = []
    for source, count in zip(sources, steps, strict=True):
        ids = torch.tensor([[c.bos_id, *source, c.eos_id]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            cross_keys, cross_values = model.cross_keys_values(model.encode(ids, mask, SOURCE_TO_TARGET))
            keys, values, past_mask = model.empty_cache(1)
            token = torch.tensor([[c.bos_id]])
            for position in range(count):
                log_probs, keys, values = model.step(
                    token, torch.tensor([[position]]), keys, values, past_mask, cross_keys, cross_values, mask
                )
                past_mask = torch.cat(
                    [past_mask, torch.ones(1, 1, dtype=torch.int64)], dim=1
                )  # keeps the zero slot: any past works
                token = log_probs.argmax(dim=1, keepdim=True)
        feeds.append({
            Tensor.INPUT_IDS: token.numpy(), Tensor.POSITION_IDS: np.array([[count]]),
            Tensor.PAST_KEYS: keys.numpy(), Tensor.PAST_VALUES: values.numpy(), Tensor.PAST_MASK: past_mask.numpy(),
            Tensor.CROSS_KEYS: cross_keys.numpy(), Tensor.CROSS_VALUES: cross_values.numpy(), Tensor.ATTENTION_MASK: mask.numpy(),
        })  # fmt: skip
    return feeds


def right_padded(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch of rows as the service's dynamic batcher builds it: past and source right-padded with zeros."""
    axes = {
        Tensor.PAST_KEYS: 3,
        Tensor.PAST_VALUES: 3,
        Tensor.PAST_MASK: 1,
        Tensor.CROSS_KEYS: 3,
        Tensor.CROSS_VALUES: 3,
        Tensor.ATTENTION_MASK: 1,
    }
    batch = {}
    for name in feeds[0]:
        axis = axes.get(name)
        longest = max(f[name].shape[axis] for f in feeds) if axis is not None else 0
        parts = []
        for f in feeds:
            widths = [(0, 0)] * f[name].ndim
            if axis is not None:
                widths[axis] = (0, longest - f[name].shape[axis])
            parts.append(np.pad(f[name], widths))
        batch[name] = np.concatenate(parts)
    return batch


def test_a_padded_batch_of_rows_at_different_steps_gives_each_row_its_own_result(
    exported: ModelVersion, tiny: tuple[ParaphraseTransformer, Tokenizer]
) -> None:
    model, tokenizer = tiny
    _, step_session = sessions(exported)
    sources = encode_sources(tokenizer, quora_test_sources(4, offset=200), MAX_LENGTH)
    assert len({len(s) for s in sources}) > 1
    steps = [0, 3, 1, 6]  # the first row is a first step (one masked zero slot)
    feeds = torch_rows(model, sources, steps)
    batch = right_padded(feeds)
    log_probs, keys, _ = onnx_step(step_session, batch)
    for i, feed in enumerate(feeds):
        with torch.no_grad():
            expected, own_keys, _ = model.step(*(torch.from_numpy(feed[n]) for n in export.STEP_INPUTS))
        assert np.max(np.abs(log_probs[i] - expected[0].numpy())) <= PARITY_MAX_ABS
        past = feed[Tensor.PAST_MASK].shape[1]
        mine = np.concatenate([keys[i, :, :, :past], keys[i, :, :, -1:]], axis=2)
        assert np.max(np.abs(mine - own_keys[0].numpy())) <= PARITY_MAX_ABS
    # the masks are what make it work: padding read as real positions changes the rows' results
    unmasked = {
        **batch,
        Tensor.PAST_MASK: np.ones_like(batch[Tensor.PAST_MASK]),
        Tensor.ATTENTION_MASK: np.ones_like(batch[Tensor.ATTENTION_MASK]),
    }
    assert np.max(np.abs(onnx_step(step_session, unmasked)[0] - log_probs)) > 100 * PARITY_MAX_ABS


def test_the_first_step_matches_the_teacher_forced_decoder(
    exported: ModelVersion, tiny: tuple[ParaphraseTransformer, Tokenizer]
) -> None:
    model, tokenizer = tiny
    encoder_session, step_session = sessions(exported)
    sources = encode_sources(tokenizer, quora_test_sources(6, offset=300), MAX_LENGTH)
    c = model.config
    width = max(len(s) for s in sources) + 2
    ids = np.array([[c.bos_id, *s, c.eos_id] + [c.pad_id] * (width - len(s) - 2) for s in sources], dtype=np.int64)
    mask = (ids != c.pad_id).astype(np.int64)
    cross_keys, cross_values = encoder_session.run(
        [Tensor.CROSS_KEYS, Tensor.CROSS_VALUES], {Tensor.INPUT_IDS: ids, Tensor.ATTENTION_MASK: mask}
    )  # type: ignore[attr-defined]
    rows = len(sources)
    zeros = np.zeros((rows, c.decoder_layers, c.heads, 1, c.d_model // c.heads), dtype=np.float32)
    log_probs, keys, _ = onnx_step(step_session, {
        Tensor.INPUT_IDS: np.full((rows, 1), c.bos_id), Tensor.POSITION_IDS: np.zeros((rows, 1), dtype=np.int64),
        Tensor.PAST_KEYS: zeros, Tensor.PAST_VALUES: zeros, Tensor.PAST_MASK: np.zeros((rows, 1), dtype=np.int64),
        Tensor.CROSS_KEYS: cross_keys, Tensor.CROSS_VALUES: cross_values, Tensor.ATTENTION_MASK: mask,
    })  # fmt: skip
    assert keys.shape == (rows, c.decoder_layers, c.heads, 2, c.d_model // c.heads)
    with torch.no_grad():
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        logits = model.decode(torch.full((rows, 1), c.bos_id), model.encode(t_ids, t_mask, SOURCE_TO_TARGET), t_mask)
    assert np.max(np.abs(log_probs - torch.log_softmax(logits[:, 0], dim=-1).numpy())) <= PARITY_MAX_ABS


def perturbed(step_file: Path, out: Path) -> Path:
    """The step graph with noise (std 0.05) on its largest weight matrix: a graph that computes something else."""
    graph = onnx.load(str(step_file))
    biggest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = onnx.numpy_helper.to_array(biggest)
    array = array + np.random.default_rng(0).normal(0.0, 0.05, array.shape)
    biggest.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), biggest.name))
    onnx.save(graph, str(out))
    return out


def test_a_graph_that_differs_fails_the_parity_check(
    tiny: tuple[ParaphraseTransformer, Tokenizer], tmp_path: Path
) -> None:
    model, tokenizer = tiny
    encoder_file, step_file = export_graphs(model, tmp_path)
    sources = encode_sources(tokenizer, quora_test_sources(10), MAX_LENGTH)
    assert parity_check(model, encoder_file, step_file, sources, MAX_LENGTH)["passed"]
    result = parity_check(model, encoder_file, perturbed(step_file, tmp_path / "perturbed.onnx"), sources, MAX_LENGTH)
    assert not result["passed"]
    assert result["max_abs_diff"]["log_probs"] > PARITY_MAX_ABS
    assert any("log_probs" in f for f in result["failures"])
    # another model's tokens are caught as token mismatches, not ties
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.output_bias.add_(3 * torch.randn(other.output_bias.shape, generator=torch.Generator().manual_seed(1)))
    tokens = parity_check(other, encoder_file, step_file, sources, MAX_LENGTH)
    assert tokens["greedy"]["match_rate"] < 1 and tokens["greedy"]["mismatches"] > tokens["greedy"]["ties"]
    assert tokens["beam"]["match_rate"] < 1
    assert any("greedy decodings differ" in f for f in tokens["failures"])


def test_a_failed_parity_check_registers_nothing(
    tiny: tuple[ParaphraseTransformer, Tokenizer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny
    real = export.export_graphs

    def export_wrong_graphs(m: ParaphraseTransformer, work_dir: Path) -> tuple[Path, Path]:
        encoder_file, step_file = real(m, work_dir)
        return encoder_file, perturbed(step_file, step_file)

    monkeypatch.setattr(export, "export_graphs", export_wrong_graphs)
    repository = ModelRepository(tmp_path / "models")
    with pytest.raises(ParityError, match="log_probs"):
        export_paraphraser(
            model, tokenizer, repository, NAME, properties=CALLER_PROPERTIES, checkpoint=None,
            parity_sentences=quora_test_sources(8), work_dir=tmp_path / "work",
        )  # fmt: skip
    assert not repository.has(NAME) and not repository.has(encoder_name(NAME))


def test_bad_exports_are_refused(tiny: tuple[ParaphraseTransformer, Tokenizer], tmp_path: Path) -> None:
    model, tokenizer = tiny
    repository = ModelRepository(tmp_path / "models")
    kwargs = {"checkpoint": None, "work_dir": tmp_path / "work"}
    with pytest.raises(ValueError, match="parity_sentences"):
        export_paraphraser(model, tokenizer, repository, NAME, properties={}, parity_sentences=[], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length"):
        export_paraphraser(
            model, tokenizer, repository, NAME, properties={Prop.MAX_LENGTH: 40}, parity_sentences=["a"], **kwargs
        )  # type: ignore[arg-type]
    smaller = ParaphraseTransformer(model.config.__class__(**{**model.config.to_dict(), "vocab_size": 100}))
    with pytest.raises(ValueError, match="tokens"):
        export_paraphraser(smaller, tokenizer, repository, NAME, properties={}, parity_sentences=["a"], **kwargs)  # type: ignore[arg-type]
    assert repository.models() == []
