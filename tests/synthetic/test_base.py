"""The generators' shared calling convention: one SynthRequest plus each kind's own keyword options."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from rich.progress import Progress

from compkit.synthetic import SYNTH_KINDS, SynthRequest
from compkit.util.errors import CompkitError
from tests.conftest import quiet


def request(tmp_path: Path, progress: Progress, patients: int = 1, test_patients: int = 1) -> SynthRequest:
    return SynthRequest(tmp_path / "data", tmp_path / "gt", patients, test_patients, 64, 0, progress)


def test_request_is_frozen_and_counts_both_splits(tmp_path):
    with Progress(console=quiet()) as progress:
        asked = request(tmp_path, progress, patients=3, test_patients=2)
    assert asked.total == 5
    with pytest.raises(AttributeError):
        asked.size = 128


def test_kinds_in_registration_order_with_descriptions():
    assert SYNTH_KINDS.names() == ["handbone", "fundus", "isic"]
    assert all(description for _, description in SYNTH_KINDS.describe())


def test_unknown_kind_suggests_a_close_one():
    with pytest.raises(
        CompkitError, match=r"--kind: unknown synthetic dataset kind 'fundis' \(did you mean 'fundus'\?\)"
    ):
        SYNTH_KINDS.get("fundis")


def test_every_generator_takes_the_request_and_keyword_only_variants():
    for name, generator in SYNTH_KINDS.items():
        parameters = list(inspect.signature(generator).parameters.values())
        assert parameters[0].name == "request", name
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in parameters[1:]), name


@pytest.mark.parametrize("kind", ["handbone", "fundus", "isic"])
def test_generator_writes_where_asked(kind, tmp_path):
    with Progress(console=quiet()) as progress:
        summary = SYNTH_KINDS[kind](request(tmp_path, progress))
    assert isinstance(summary, str) and summary
    assert any((tmp_path / "data" / "train").rglob("*.*")) and any((tmp_path / "data" / "test").rglob("*.*"))
    assert any((tmp_path / "gt").rglob("*.*")), "test labels go to the request's gt"


def test_an_option_of_another_kind_is_refused(tmp_path):
    with Progress(console=quiet()) as progress, pytest.raises(TypeError, match="lesion_scale"):
        SYNTH_KINDS["isic"](request(tmp_path, progress), lesion_scale=2.0)
