"""The wheel carries what the commands need (the full check, a wheel installed outside the
repository, is ``.ci/wheel_check``, which CI runs after the suite)."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_package_list_names_every_package_under_pkpo():
    on_disk = {
        ".".join(folder.relative_to(REPO).parts)
        for folder in (REPO / "pkpo").rglob("*")
        if folder.is_dir() and any(folder.glob("*.py")) and "__pycache__" not in folder.parts
    } | {"pkpo"}
    mapped = set(SETUPTOOLS["package-dir"])
    assert set(SETUPTOOLS["packages"]) == on_disk | mapped


def test_configs_and_notebooks_ship_as_packages_from_the_top_level_folders():
    assert SETUPTOOLS["package-dir"] == {"pkpo.conf": "conf", "pkpo.notebooks": "analysis"}
    conf = Path(str(importlib.resources.files("pkpo.conf")))
    notebooks = Path(str(importlib.resources.files("pkpo.notebooks")))
    assert (conf / "train.yaml").is_file() and (conf / "toy.yaml").is_file()
    import pkpo.notebooks

    assert all((notebooks / f"{name}.py").is_file() for name in pkpo.notebooks.NOTEBOOKS)
    assert (notebooks / "paper" / "tables.csv").is_file()


def test_the_estimators_and_transforms_import_none_of_the_heavy_stack():
    # a fresh interpreter: this one has imported torch already
    code = (
        "import sys, pkpo.estimators, pkpo.transforms\n"
        "out = pkpo.transforms.transform('pkpo_sloo_minus_one', [[1.0, 0.0, 1.0, 0.0]], 2)\n"
        "heavy = ('torch', 'transformers', 'hydra', 'omegaconf', 'pandas', 'scipy')\n"
        "print(type(out).__module__, [m for m in heavy if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["numpy", "[]"]


def test_a_command_without_its_extra_says_which_to_install_in_one_line(capsys):
    import pytest

    from pkpo import commands

    with pytest.raises(SystemExit) as done:
        commands._needs("pkpo-train", "train", ("numpy", "no_such_module_of_pkpo"))
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "pkpo-train: error: needs no_such_module_of_pkpo, which `pip install pkpo` leaves out; "
        "install the extra: pip install 'pkpo[train]'"
    ]
