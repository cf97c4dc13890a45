#!/usr/bin/env python3
"""Writes DeepEP's public Python API as JSON: the names deep_ep exports and,
for each public class, every method's parameters, defaults and whether it is
a static method. python/tests/test_deepep_api.py holds deep_ep (ours) to it,
so an engine's call that works with DeepEP binds the same way to ours.

    tools/deepep_api.py DEEPEP_CHECKOUT > python/tests/deepep_api.json

DEEPEP_CHECKOUT: a DeepEP source tree (the one in ../shared/anchors/deepep
is the commit the issues name). Only signatures are read (Python's ast):
nothing of DeepEP's code is kept."""

import ast
import json
import os
import sys


def methods(tree: ast.Module) -> dict:
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for f in node.body:
            if not isinstance(f, ast.FunctionDef):
                continue
            if f.name.startswith("_") and f.name not in ("__init__", "__enter__", "__exit__"):
                continue
            a = f.args
            out[f"{node.name}.{f.name}"] = {
                "params": [x.arg for x in a.posonlyargs + a.args],
                "defaults": [ast.unparse(d) for d in a.defaults],
                "vararg": a.vararg is not None,
                "kwonly": [x.arg for x in a.kwonlyargs],
                "static": any(ast.unparse(d) == "staticmethod" for d in f.decorator_list),
            }
    return out


def exported(init: ast.Module) -> list:
    names = []
    for node in init.body:
        if isinstance(node, ast.ImportFrom):
            names += [alias.asname or alias.name for alias in node.names]
    return sorted(names)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    package = os.path.join(sys.argv[1], "deep_ep")
    parse = lambda name: ast.parse(open(os.path.join(package, name)).read())
    api = {"exports": exported(parse("__init__.py")), "methods": {}}
    for name in ("buffer.py", "utils.py"):
        api["methods"].update(methods(parse(name)))
    json.dump(api, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
