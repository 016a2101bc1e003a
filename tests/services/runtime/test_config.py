from __future__ import annotations

from pathlib import Path

import pytest

from services.backends.onnx_session import CPU, create_session, resolve_providers
from services.nextframe.config import NextFrameConfig
from services.retrieval.config import RetrievalConfig
from services.runtime.config import ConfigError, FacetConfig, load_config, replace
from services.sae.config import SaeConfig


def test_defaults_are_valid_and_per_user() -> None:
    config = load_config(env={"HOME": "/home/alice"})
    assert config.model_repository == Path("/home/alice/.local/share/facet/models")
    assert config.batching.max_batch_size >= 1
    assert config.server.port is None  # the service's own default port


def test_environment_overrides_top_level_and_sections() -> None:
    config = load_config(
        env={
            "FACET_MODEL_REPOSITORY": "/srv/models",
            "FACET_API_KEY": "k",
            "FACET_SERVER_PORT": "0",
            "FACET_BATCHING_ENABLED": "false",
            "FACET_BATCHING_MAX_QUEUE_DELAY_MICROSECONDS": "500",
        }
    )
    assert config.model_repository == Path("/srv/models")
    assert config.api_key == "k"
    assert config.server.port == 0
    assert config.batching.enabled is False
    assert config.batching.max_queue_delay_microseconds == 500


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "facet.toml"
    path.write_text('log_level = "DEBUG"\n[batching]\nmax_batch_size = 8\nmax_queue_size = 99\n')
    config = load_config(path, env={"FACET_BATCHING_MAX_BATCH_SIZE": "16"})
    assert config.log_level == "DEBUG"
    assert config.batching.max_batch_size == 16  # environment wins over the file
    assert config.batching.max_queue_size == 99


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACET_SERVER_PORT": "70000"}, "server.port"),
        ({"FACET_SERVER_PORT": "abc"}, "FACET_SERVER_PORT"),
        ({"FACET_BATCHING_MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"FACET_BATCHING_ENABLED": "maybe"}, "FACET_BATCHING_ENABLED"),
        ({"FACET_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"FACET_SAE_MAX_TEXT_CHARS": "0"}, "sae.max_text_chars must be >= 1"),
        ({"FACET_NEXTFRAME_MAX_HORIZON": "many"}, "FACET_NEXTFRAME_MAX_HORIZON"),
        ({"FACET_RETRIEVAL_MAX_TOP_K": "-1"}, "retrieval.max_top_k"),
        ({"FACET_ONNXRUNTIME_PROVIDERS": "QuantumExecutionProvider"}, "unknown provider 'QuantumExecutionProvider'"),
        ({"FACET_ONNXRUNTIME_PROVIDERS": "auto,cpu"}, "unknown provider 'auto'"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_unknown_keys_in_file_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "facet.toml"
    path.write_text("[batching]\nmax_batchsize = 8\n")
    with pytest.raises(ConfigError, match="max_batchsize"):
        load_config(path, env={})


def test_api_key_is_masked_when_printed() -> None:
    assert FacetConfig(api_key="secret").to_dict()["api_key"] == "***"


def test_each_capability_has_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "facet.toml"
    path.write_text("[sae]\nmax_text_chars = 100\n[nextframe]\nmax_horizon = 32\n[retrieval]\nmax_top_k = 50\n")
    config = load_config(path, env={"FACET_SAE_MAX_ROWS": "7"})
    assert config.section(SaeConfig).max_text_chars == 100
    assert config.section(SaeConfig).max_rows == 7  # environment, as for the runtime's sections
    assert config.section(NextFrameConfig).max_horizon == 32
    assert config.section(RetrievalConfig).max_top_k == 50
    assert config.to_dict()["nextframe"]["max_horizon"] == 32
    assert replace(config, sae={"max_top_k": 3}).section(SaeConfig).max_top_k == 3
    assert FacetConfig().section(SaeConfig) == SaeConfig()  # a config built without sections: the defaults


def test_unknown_keys_in_a_capability_section_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "facet.toml"
    path.write_text("[sae]\nmax_text_char = 100\n")
    with pytest.raises(ConfigError, match=r"unknown config keys under 'sae': max_text_char \(did you mean max_text_chars\?\)"):
        load_config(path, env={})


def test_onnxruntime_providers_auto_is_the_cpu_here_and_cpu_sessions_run(model_repository) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    # this machine's ONNX Runtime has no CUDA: "auto" means CPU, as before the setting existed
    assert resolve_providers("auto") == [CPU] and resolve_providers("cpu") == [CPU]
    entry = model_repository.get("all-minilm-l6-v2")
    session = create_session(entry.model_file, **load_config(env={}).onnxruntime.session_options())
    assert session.get_providers() == [CPU]
    ids = np.array([[101, 7592, 102]], dtype=np.int64)
    outputs = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert outputs[0].shape == (1, 384)


def test_a_provider_this_build_lacks_is_refused_when_a_session_opens() -> None:
    from services.backends.onnx_session import ProviderError

    with pytest.raises(ProviderError, match="CUDAExecutionProvider, which this ONNX Runtime build does not offer"):
        resolve_providers("cuda,cpu")
