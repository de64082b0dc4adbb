"""The files the Pulumi CLI reads to install and run the program, laid out as its Python
toolchain reads them (pulumi/pulumi sdk/python/toolchain): the virtualenv relative to the project
root, `requirements.txt` in the program folder (`main`), where `pip install -r` runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def test_the_program_folder_has_the_entry_point() -> None:
    project = _project()
    assert project["name"] == "elizadb"
    assert project["runtime"]["name"] == "python"
    program = ROOT / project["main"]
    assert (program / "__main__.py").is_file()


def test_pulumi_install_finds_requirements_that_install_this_project() -> None:
    program = ROOT / _project()["main"]
    requirements = program / "requirements.txt"
    assert requirements.is_file(), (
        f"pulumi install runs `pip install -r requirements.txt` in {program}"
    )
    lines = [
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    editable = [line.removeprefix("-e").strip() for line in lines if line.startswith("-e")]
    assert len(editable) == 1, lines
    # pip resolves the path against its working directory, the program folder.
    target = (program / editable[0]).resolve()
    pyproject = tomllib.loads((target / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "eliza-db"
    names = {
        dep.split("=")[0].split(">")[0].split("<")[0]
        for dep in pyproject["project"]["dependencies"]
    }
    assert {"pulumi", "pulumi-docker", "pulumi-random", "pulumi-tls"} <= names


def test_the_virtualenv_is_the_projects_own() -> None:
    options = _project()["runtime"]["options"]
    assert options["toolchain"] == "pip"
    # Relative to the project root, so it is the .venv that scripts/_prepare.sh makes too.
    assert (ROOT / options["virtualenv"]).resolve() == ROOT / ".venv"


def test_the_program_imports_from_its_own_folder_without_an_install() -> None:
    """Pulumi runs infra/__main__.py with infra/ as the working directory: the entry point puts
    the project root on sys.path itself, so `infra` and `elizadb` import either way."""
    text = (ROOT / "infra" / "__main__.py").read_text()
    assert "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))" in text
