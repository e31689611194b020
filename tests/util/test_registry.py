"""The one registry type: a duplicate name refused naming both registrants, an unknown name answered with a close
match, names listed in registration order with their descriptions."""

from __future__ import annotations

import pytest

from compkit.util.errors import CompkitError
from compkit.util.registry import Registry, doc_summary


class Alpha:
    """The first one.

    More detail that is not part of the summary."""


class Beta:
    pass


def test_register_returns_the_object_and_works_as_a_decorator():
    registry: Registry[type] = Registry("thing")
    assert registry.register("alpha", Alpha, "first") is Alpha

    @registry.register("beta", description="second")
    class Decorated:
        pass

    assert registry.get("beta") is Decorated and registry["alpha"] is Alpha
    assert "beta" in registry and "gamma" not in registry and len(registry) == 2


def test_a_duplicate_name_is_refused_naming_both_registrants():
    registry: Registry[object] = Registry("thing")
    registry.register("alpha", Alpha)
    with pytest.raises(
        ValueError,
        match=r"thing 'alpha' is registered twice: by tests\.util\.test_registry\.Alpha and by tests\.util\.test_registry\.Beta",
    ):
        registry.register("alpha", Beta)
    assert registry.get("alpha") is Alpha, "the first registrant stays"
    with pytest.raises(
        ValueError,
        match=r"by a list registered in tests\.util\.test_registry and by a dict registered in tests\.util\.test_registry",
    ):
        registry.register("views", [1])
        registry.register("views", {})
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("views", [1])  # an equal object from the same module is still a second registrant
    registry.register("alpha", Alpha)  # the same definition again (a module executed twice) is no duplicate
    assert registry.names() == ["alpha", "views"]


def test_an_unknown_name_gets_a_suggestion_and_the_known_names():
    registry: Registry[str] = Registry("family", option="model.family")
    for name in ("smp", "ultralytics"):
        registry.register(name, name)
    with pytest.raises(CompkitError) as info:
        registry.get("smpp")
    assert info.value.path == "model.family"
    assert info.value.problem == "unknown family 'smpp' (did you mean 'smp'?) (known: smp, ultralytics)"
    with pytest.raises(CompkitError) as info:
        registry["keras"]
    assert info.value.problem == "unknown family 'keras' (known: smp, ultralytics)", (
        "no suggestion when nothing is close"
    )
    with pytest.raises(CompkitError) as info:
        registry.get("yolo", where="data/recipe.yaml")
    assert info.value.path == "data/recipe.yaml", "the caller names where the name came from"


def test_listing_keeps_registration_order_and_filters():
    registry: Registry[int] = Registry("number")
    for name, value, description in [("zeta", 3, "last letter"), ("alpha", 1, "first letter"), ("mu", 2, "")]:
        registry.register(name, value, description)
    assert registry.names() == list(registry) == ["zeta", "alpha", "mu"], "registration order, not sorted"
    assert registry.items() == [("zeta", 3), ("alpha", 1), ("mu", 2)] and registry.values() == [3, 1, 2]
    assert registry.describe() == [("zeta", "last letter"), ("alpha", "first letter"), ("mu", "")]
    assert registry.names(where=lambda value: value < 3) == ["alpha", "mu"]
    registry.unregister("alpha")
    assert registry.names() == ["zeta", "mu"]


def test_descriptions_of_classes_are_their_docstrings_first_paragraph():
    assert doc_summary(Alpha.__doc__) == "The first one."
    assert doc_summary(Beta.__doc__) == ""
    assert doc_summary("A long first\n    paragraph.\n\n    Detail.") == "A long first paragraph."


def test_compkits_registries_describe_every_member():
    from compkit.data import DATASET_FORMATS
    from compkit.families import FAMILIES
    from compkit.inference.views import TTA_VIEWS
    from compkit.pretrained.weights import ASSET_LIBRARIES
    from compkit.training.tracking import TRACKERS

    for registry in (DATASET_FORMATS, FAMILIES, TTA_VIEWS, TRACKERS, ASSET_LIBRARIES):
        assert all(description for _, description in registry.describe()), (
            f"{registry.kind}: every entry says what it is"
        )
    assert FAMILIES.names() == ["smp", "ultralytics"]
    assert TTA_VIEWS.names() == ["none", "hflip", "vflip", "d4", "scales"]
    assert DATASET_FORMATS.names()[-2:] == ["rlecsv", "pairs"], "the generic auto-detected layouts are tried last"
