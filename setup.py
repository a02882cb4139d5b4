"""Lets Beam's `--setup_file ./setup.py` build the package; all metadata is in pyproject.toml."""

from setuptools import setup

setup()
