"""deep_ep (ours) binds every call the way DeepEP's does: the same exported
names, and for each public method the same parameters in the same order,
the same defaults and the same static-ness, checked against DeepEP's
signatures as tools/deepep_api.py wrote them (deepep_api.json). A method we
do not implement yet must still bind the same way and then raise."""

import ast
import inspect
import json
import os

import pytest

import deep_ep

API = json.load(open(os.path.join(os.path.dirname(__file__), "deepep_api.json")))


def test_the_same_names_are_exported():
    for name in API["exports"]:
        assert hasattr(deep_ep, name), f"deep_ep.{name} is missing"


@pytest.mark.parametrize("name", sorted(API["methods"]))
def test_method_binds_like_deepeps(name):
    want = API["methods"][name]
    cls, _, method = name.partition(".")
    owner = getattr(deep_ep, cls)
    assert hasattr(owner, method), f"deep_ep.{name} is missing"
    raw = inspect.getattr_static(owner, method)
    assert isinstance(raw, staticmethod) == want["static"], f"{name}: static in DeepEP is {want['static']}"
    params = list(inspect.signature(getattr(owner, method)).parameters.values())
    expected = want["params"]
    got_names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert got_names == expected, f"{name}: parameters {got_names}, DeepEP's {expected}"
    got_kwonly = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    assert got_kwonly == want["kwonly"], f"{name}: keyword-only {got_kwonly}, DeepEP's {want['kwonly']}"
    defaults = [p.default for p in params if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty]
    assert len(defaults) == len(want["defaults"]), f"{name}: {len(defaults)} defaults, DeepEP has {len(want['defaults'])}"
    for got, source in zip(defaults, want["defaults"]):
        try:
            expected_value = ast.literal_eval(source)
        except ValueError:
            continue  # an expression of DeepEP's own names: binds the same whatever it evaluates to
        assert got == expected_value and type(got) is type(expected_value), \
            f"{name}: default {got!r}, DeepEP's {source}"
