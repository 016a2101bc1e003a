"""The tiny test paraphraser (`build_test_model`, the paraphrase fixtures' `paraphrase_repository`):
registered as the service reads it (an encoder and a decoder step with the catalog's kinds,
properties and files, and the embedding model beside them); trained as its properties say; the
same tokens from a second build; `has_defaults` / `build_defaults`; `facet paraphrase build`
refuses bad arguments and missing data with a message that names them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from services.model_repository import ModelRepository, ModelVersion
from services.paraphrase.catalog import File, Kind, Prop, Tensor, encoder_name
from training.paraphrase import build as build_module
from training.paraphrase.build import (
    DEFAULT_PARAPHRASER,
    EMBEDDING_MODEL,
    BuildOptions,
    build_defaults,
    build_test_model,
    has_defaults,
    main,
    tiny_options,
)
from training.paraphrase.data import load_pairs
from training.paraphrase.evaluate import METRIC_KEYS
from training.paraphrase.export import load_pytorch_model
from training.paraphrase.generate import encode_sources, greedy

# The first test here builds the tiny model when no session fixture has (a minute of CPU).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def repository(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_repository: ModelRepository) -> ModelRepository:
    """The session's test paraphraser (`paraphrase_repository`, the paraphrase fixtures') where
    the registry serves paraphrase; else built here the same way."""
    try:
        found: ModelRepository = request.getfixturevalue("paraphrase_repository")
        return found
    except pytest.FixtureLookupError:
        reuse = os.environ.get("FACET_TEST_PARAPHRASE_REPOSITORY")
        built = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("paraphrase-models"))
        if not built.has(DEFAULT_PARAPHRASER):
            build_test_model(built, tmp_path_factory.mktemp("paraphrase-work"), name=DEFAULT_PARAPHRASER, embedding_from=model_repository)
        return built


@pytest.fixture(scope="module")
def tiny(repository: ModelRepository) -> ModelVersion:
    return repository.get(DEFAULT_PARAPHRASER)


def test_registered_as_the_service_reads_it(repository: ModelRepository, tiny: ModelVersion) -> None:
    encoder = repository.get(encoder_name(DEFAULT_PARAPHRASER))
    assert tiny.kind == Kind.DECODER_STEP and encoder.kind == Kind.ENCODER
    assert [t.name for t in encoder.inputs] == [Tensor.INPUT_IDS, Tensor.ATTENTION_MASK]
    assert [t.name for t in tiny.outputs] == [Tensor.LOG_PROBS, Tensor.PRESENT_KEYS, Tensor.PRESENT_VALUES]
    props = tiny.properties
    assert props[Prop.ENCODER_MODEL] == encoder.name and props[Prop.MAX_LENGTH] == 20
    options = tiny_options()
    assert (props[Prop.LAYERS], props[Prop.HEADS], props[Prop.HEAD_DIM]) == (options.decoder_layers, options.heads, options.d_model // options.heads)
    tokenizer = Tokenizer.from_file(str(tiny.file(File.TOKENIZER)))
    assert props[Prop.VOCAB_SIZE] == tokenizer.get_vocab_size() < 5000  # shortlisted: min_piece_count 2 on 300 pairs
    assert props[Prop.SPECIAL_IDS] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert (tiny.file(File.CHECKPOINT) / "model.safetensors").is_file()
    # the embedding model the service's similarity needs is there too
    assert repository.get(EMBEDDING_MODEL).kind == "embedding"


def test_properties_say_how_it_was_trained_and_how_it_scores(tiny: ModelVersion) -> None:
    props = tiny.properties
    assert props[Prop.SETTING] == "krl"
    data = props[Prop.TRAINING_DATA]
    assert data["dataset"] == "quora" and data["label_fraction"] == 1.0
    assert data["labelled_pairs"] == 300 and data["unlabelled_sources"] == 300  # all labelled: their sources are the unlabelled text
    training = props[Prop.TRAINING]
    assert (training["steps"], training["krl_ddl_steps"], training["train_pairs"]) == (120, 100, 300)
    assert training["time_s"] > 0 and training["best_valid_loss"] > 0
    stages = [h["stage"] for h in training["history"]]
    assert "ddl" in stages and "krl-stage-2-start" in stages and "ddl+vsar" in stages
    metrics = props[Prop.METRICS]
    assert metrics["split"] == "quora test" and metrics["decoding"] == "greedy" and metrics["sentences"] == 48
    assert all(0.0 <= metrics[k] <= 100.0 for k in METRIC_KEYS if k != "ibleu")


def test_a_second_build_gives_the_same_tokens(repository: ModelRepository, tiny: ModelVersion, tmp_path: Path, rarb_data: Path) -> None:
    # the embedding model is linked from the first build's repository, not exported again
    again = build_test_model(ModelRepository(tmp_path / "models"), tmp_path / "work", name="again", embedding_from=repository)
    linked = ModelRepository(tmp_path / "models").get(EMBEDDING_MODEL)
    assert os.path.samefile(linked.model_file, repository.get(EMBEDDING_MODEL).model_file)
    (first, tokenizer), (second, tokenizer_again) = load_pytorch_model(tiny), load_pytorch_model(again)
    weights = first.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in second.state_dict().items())
    assert tokenizer.to_str() == tokenizer_again.to_str()
    sources = encode_sources(tokenizer, [s for s, _ in load_pairs("quora", "test", rarb_data.parent)[:16]], 20)
    with torch.inference_mode():
        assert greedy(first, sources, 20) == greedy(second, sources, 20)


def test_has_defaults_needs_the_paraphraser_its_encoder_and_the_embedding_model(repository: ModelRepository, tmp_path: Path) -> None:
    assert not has_defaults(ModelRepository(tmp_path / "empty"))
    assert has_defaults(repository)
    assert build_defaults(repository, tmp_path / "work") == []  # nothing missing: nothing built
    partial = ModelRepository(tmp_path / "partial")
    partial.root.mkdir()
    for name in (DEFAULT_PARAPHRASER, EMBEDDING_MODEL):  # the encoder missing
        (partial.root / name).symlink_to(repository.root / name, target_is_directory=True)
    assert partial.has(DEFAULT_PARAPHRASER) and not has_defaults(partial)


def test_build_defaults_builds_only_what_is_missing_with_the_default_options(repository: ModelRepository, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    calls: list[tuple[Path, BuildOptions]] = []

    def record(repo: ModelRepository, work_dir: Path, options: BuildOptions) -> ModelVersion:
        calls.append((work_dir, options))
        return ModelVersion(options.name, 1, repo.root, {})

    monkeypatch.setattr(build_module, "build_paraphraser", record)  # the real one trains for many minutes
    target = ModelRepository(tmp_path / "models")
    target.root.mkdir()
    (target.root / EMBEDDING_MODEL).symlink_to(repository.root / EMBEDDING_MODEL, target_is_directory=True)
    built = build_defaults(target, tmp_path / "work", tmp_path / "data")
    assert [v.name for v in built] == [DEFAULT_PARAPHRASER]  # the embedding model was there: not exported again
    assert calls == [(tmp_path / "work" / DEFAULT_PARAPHRASER, BuildOptions(data=tmp_path / "data"))]
    assert calls[0][1].setting == "krl" and calls[0][1].label_fraction == 1.0 and calls[0][1].dataset == "quora"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--setting", "supervised"], "--setting"),
        (["--label-fraction", "0"], "label_fraction"),
        (["--label-fraction", "nan"], "label_fraction"),
        (["--krl-ddl-steps", "500", "--steps", "100"], "krl_ddl_steps"),
        (["--max-positions", "16"], "max_positions"),
        (["--heads", "3"], "heads"),
        (["--evaluate", "-2"], "evaluate"),
        (["--steps", "many"], "--steps"),
    ],
)
def test_the_command_refuses_bad_arguments_naming_them(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "facet paraphrase build: error:" in error and named in error


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--data", str(tmp_path / "nowhere"), "--repository", str(tmp_path / "models")])
    assert code == 1
    error = capsys.readouterr().err
    assert "quora paraphrase data is missing" in error and "--data" in error
    assert not ModelRepository(tmp_path / "models").models()
