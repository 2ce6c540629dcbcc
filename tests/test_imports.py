"""Imports run one way: features, models <- serving <- flows. The config types
(``flows/config.py``) are the one shared leaf: it imports nothing of the project, and it is
the only part of flows/ the packages below may import."""
from __future__ import annotations

from pathlib import Path

import pytest

from flows.code_deps import ROOT, module_imports, relative

LAYER = {"features": 0, "models": 0, "serving": 1, "flows": 2}
CONFIG = ROOT / "flows" / "config.py"


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["features", "models", "serving"])
def test_no_module_imports_a_layer_above_its_own(package):
    wrong = {}
    for path in files(package):
        above = [p for p in module_imports(path) if p != CONFIG and LAYER[p.relative_to(ROOT).parts[0]] > LAYER[package]]
        if above:
            wrong[str(path.relative_to(ROOT))] = relative(above)
    assert not wrong, wrong


def test_the_config_types_import_nothing_of_the_project():
    assert not module_imports(CONFIG)
