"""The `[phenotype]` section: its defaults, the TOML file and `FACET_PHENOTYPE_*` variables read by the
runtime's one config loader, and each bad value refused with its key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services import registry
from services.phenotype.config import MIB, PhenotypeConfig
from services.runtime.config import ConfigError, load_config, replace


@pytest.fixture(autouse=True)
def phenotype_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config loader reads the sections of the registry's rows. Until the phenotype row lands
    with its servicer, a stand-in row naming only this section is put in the registry for each
    test (the loader reads nothing else of a row); once the row is there, the real one is used."""
    if "phenotype" in registry.names():
        return
    row = dataclasses.replace(registry.CAPABILITIES[0], name="phenotype", config="services.phenotype.config:PhenotypeConfig")
    monkeypatch.setattr(registry, "CAPABILITIES", (*registry.CAPABILITIES, row))


def test_defaults_are_the_documented_ones() -> None:
    config = load_config(env={"HOME": "/home/alice"}).section(PhenotypeConfig)
    assert config == PhenotypeConfig()
    assert config.model == "configfaces-64"
    assert (config.min_image_side, config.max_image_side) == (16, 2048)
    # a raw RGBA image of the largest side fits the byte limit
    assert config.max_image_bytes == 16 * MIB == 2048 * 2048 * 4
    assert (config.max_edits, config.max_interpolation_values) == (7, 16)


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "facet.toml"
    path.write_text('[phenotype]\nmodel = "faces-128"\nmax_image_side = 512\nmax_edits = 2\n')
    config = load_config(path, env={"FACET_PHENOTYPE_MAX_IMAGE_SIDE": "1024", "FACET_PHENOTYPE_MAX_INTERPOLATION_VALUES": "4"})
    section = config.section(PhenotypeConfig)
    assert section.model == "faces-128"
    assert section.max_image_side == 1024  # the environment wins over the file
    assert section.max_edits == 2
    assert section.max_interpolation_values == 4
    assert config.to_dict()["phenotype"]["max_image_side"] == 1024
    assert replace(config, phenotype={"min_image_side": 32}).section(PhenotypeConfig).min_image_side == 32


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACET_PHENOTYPE_MAX_IMAGE_BYTES": "0"}, r"phenotype.max_image_bytes must be >= 1, got 0"),
        ({"FACET_PHENOTYPE_MAX_IMAGE_SIDE": "big"}, r"FACET_PHENOTYPE_MAX_IMAGE_SIDE: cannot read 'big' as int"),
        ({"FACET_PHENOTYPE_MIN_IMAGE_SIDE": "-4"}, r"phenotype.min_image_side must be >= 1, got -4"),
        ({"FACET_PHENOTYPE_MAX_EDITS": "0"}, r"phenotype.max_edits must be >= 1, got 0"),
        ({"FACET_PHENOTYPE_MAX_INTERPOLATION_VALUES": "0"}, r"phenotype.max_interpolation_values must be >= 1"),
        ({"FACET_PHENOTYPE_MODEL": ""}, r"phenotype.model must be set"),
        (
            {"FACET_PHENOTYPE_MIN_IMAGE_SIDE": "64", "FACET_PHENOTYPE_MAX_IMAGE_SIDE": "32"},
            r"phenotype.min_image_side \(64\) must be <= phenotype.max_image_side \(32\)",
        ),
        ({"FACET_PHENOTYPE_MAX_IMAGE_BYTES": "100"}, r"phenotype.max_image_bytes \(100\) must be >= 256"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "facet.toml"
    path.write_text("[phenotype]\nmax_image_size = 100\n")
    with pytest.raises(ConfigError, match=r"unknown config keys under 'phenotype': max_image_size \(did you mean max_image_side\?\)"):
        load_config(path, env={})
