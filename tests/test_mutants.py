"""scripts/mutants.py's locator on the current source: every mutant resolves to exactly one
place (no test suite runs here; `python scripts/mutants.py` runs them)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("mutants", REPO / "scripts/mutants.py")
mutants = sys.modules["mutants"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutants)


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_every_mutant_is_located_in_the_current_source(mutant):
    changed = mutants.mutate(REPO, mutant)
    for file, text in changed.items():
        before = (REPO / file).read_text()
        if file.endswith(".py"):
            assert ast.dump(ast.parse(text)) != ast.dump(ast.parse(before))
        else:
            assert text != before
    assert mutant.tests, "every mutant names the tests that must catch it"
    for node in mutant.tests:
        path, _, name = node.partition("::")
        assert (REPO / path).is_file(), node
        if name:
            assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), node


def test_mutant_names_are_unique():
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names)) == 25


def test_the_locator_follows_moved_and_reformatted_code():
    patch = mutants.Patch("x.py", "A.f", "y = g(a, b)", "y = g(b, a)\nz = 1")
    text = (
        "def h():\n    y = g(a, b)\n\n\n"
        "class A:\n    # moved below h, re-wrapped\n    def f(self):\n"
        "        if True:\n            y = g(\n                a,  # first\n                b,\n"
        "            )\n        return y\n"
    )
    out = mutants.apply_patch(text, patch)
    assert "def h():\n    y = g(a, b)\n" in out  # the same statement outside the scope stays
    assert "            y = g(b, a)\n            z = 1\n        return y\n" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("def f():\n    y = g(a, b)\n    y = g(a, b)\n", "matches 2 nodes"),
        ("def f():\n    y = g(b, a)\n", "matches 0 nodes"),
        ("def other():\n    y = g(a, b)\n", "0 definitions of 'f'"),
    ],
    ids=["twice", "absent", "no_function"],
)
def test_an_ambiguous_or_missing_place_is_an_error(text, message):
    with pytest.raises(mutants.LocateError, match=message):
        mutants.apply_patch(text, mutants.Patch("x.py", "f", "y = g(a, b)", "y = 0"))


def test_a_yaml_list_item_is_removed_by_its_path():
    text = (
        "stages:\n  a:\n    deps:\n      - x.py  # note\n      - y.py\n"
        "  b:\n    deps:\n      - x.py\n"
    )
    out = mutants.apply_patch(text, mutants.Patch("dvc.yaml", "stages.a.deps", "x.py", None))
    assert out == "stages:\n  a:\n    deps:\n      - y.py\n  b:\n    deps:\n      - x.py\n"
