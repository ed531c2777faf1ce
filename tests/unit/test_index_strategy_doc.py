"""docs/index-strategy.md is rendered from the index strategy the verification checks: it cannot drift."""

import sys

import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import render_index_strategy  # noqa: E402  pylint: disable=wrong-import-position


def test_committed_document_is_the_rendering_of_the_spec():
    assert render_index_strategy.main(["--check"]) == 0, "run: python tools/render_index_strategy.py"


def test_every_index_of_the_spec_is_in_the_document():
    spec = yaml.safe_load(render_index_strategy.SPEC.read_text())
    text = render_index_strategy.DOC.read_text()
    assert all(f"`{entry['name']}`" in text for entry in spec["indexes"])
