"""The layers of README's "Architecture" import downward only: a test, so that a
shortcut taken later fails the suite instead of blurring the picture."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "contextsvc"
# layer -> the contextsvc layers and outside packages it must not import
FORBIDDEN = {
    "storage": ({"api", "cli", "domain", "config"}, {"flask", "werkzeug", "click"}),
    "domain": ({"api", "cli", "config"}, {"flask", "werkzeug", "click"}),
    "api": ({"cli"}, {"click"}),
    "cli": ({"api"}, {"flask", "werkzeug"}),
}


def imports(path: pathlib.Path) -> set[tuple[str, str]]:
    """(contextsvc layer or "", outside top-level package or "") for each import."""
    layer_of_file = path.relative_to(PACKAGE).parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "contextsvc":
                    found.add((alias.name.split(".")[1] if "." in alias.name else "", ""))
                else:
                    found.add(("", top))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0:
                top = module.split(".")[0]
                if top == "contextsvc":
                    rest = module.split(".")[1:]
                    found.add((rest[0] if rest else "", ""))
                else:
                    found.add(("", top))
            else:
                base = list(layer_of_file[:-1])[: len(layer_of_file) - node.level]
                target = base + (module.split(".") if module else [])
                if target:
                    found.add((target[0], ""))
                else:  # "from .. import x": the names are modules of the package
                    found.update((alias.name, "") for alias in node.names)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_downward_only(layer):
    inner, outside = FORBIDDEN[layer]
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name, top in imports(path):
            if name in inner or top in outside:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name or top}")
    assert not wrong, "\n".join(wrong)
