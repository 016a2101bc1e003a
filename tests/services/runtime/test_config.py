from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.config import ConfigError, FacetConfig, load_config


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
