"""Packaging that pyproject.toml cannot say: ship the top-level ``recipes/`` inside the wheel as ``compkit/recipes/``
(read through importlib.resources, ``compkit.training.recipe.shipped_recipes_dir``). Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["compkit", "compkit.*"]), "compkit.recipes"],
    package_dir={"compkit.recipes": "recipes"},
    package_data={"compkit.recipes": ["*.yaml", "spaces/*.yaml"]},
)
