"""The protocol modules sit side by side over the shared pieces (skserve.web and below)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import skserve

PROTOCOLS = ("api", "v2", "openapi", "docs")


def imported_modules(module: str) -> set[str]:
    tree = ast.parse((Path(skserve.__file__).parent / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", PROTOCOLS)
def test_a_protocol_module_imports_no_other_protocol_module(module: str) -> None:
    others = {f"skserve.{other}" for other in PROTOCOLS if other != module}
    assert imported_modules(module) & others == set()
