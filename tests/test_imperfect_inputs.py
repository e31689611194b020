"""Runs the catalogue of valid-but-imperfect inputs (``tests/imperfect/``): each case asserts the right result."""

from __future__ import annotations

import importlib

import pytest

from tests.imperfect import Case, Env

AREAS = ("polygons", "text", "images", "cache", "processes")


def catalogue() -> list[Case]:
    cases: list[Case] = []
    for area in AREAS:
        try:
            module = importlib.import_module(f"tests.imperfect.{area}")
        except ModuleNotFoundError as e:
            if e.name != f"tests.imperfect.{area}":
                raise
            continue
        cases += module.CASES
    return cases


CASES = catalogue()


def test_catalogue_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids repeat"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_imperfect_input(case: Case, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    case.check(Env(tmp_path, request))
