"""A missing container engine fails the integration suite in CI, whatever the spelling of CI,
and outside CI the run ends by counting the skipped tests and saying why (issue 14).

The suite runs for real in a subprocess, with DOCKER_HOST pointing at a socket that does not
exist and its module locks in a folder of its own (no other run is disturbed, no container is
touched)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.needs import in_ci

REPO = Path(__file__).resolve().parents[2]
INTEGRATION = REPO / "tests" / "integration"
MODULES = sorted(p.stem for p in INTEGRATION.glob("test_*.py"))


def _run_suite(tmp_path: Path, ci: str | None) -> tuple[int, str, ET.Element]:
    env = dict(os.environ)
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    # The several-hosts harness drives the machine's Podman whatever DOCKER_HOST says.
    env["ELIZADB_TESTHOSTS_ENGINE"] = f"unix://{tmp_path}/no-engine.sock"
    env["ELIZADB_TEST_LOCK_DIR"] = str(tmp_path / "locks")
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(INTEGRATION),
            f"--junit-xml={junit}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, ET.parse(junit).getroot()


def _outcomes(root: ET.Element) -> dict[str, list[tuple[str, str]]]:
    """Module -> [(outcome, message)] for every test case in the JUnit report."""
    found: dict[str, list[tuple[str, str]]] = {}
    for case in root.iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome, message = tag, (child.get("message") or "") + (child.text or "")
        found.setdefault(module, []).append((outcome, message))
    return found


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "yes", "on", "github-actions"])
def test_every_spelling_of_ci_counts_as_ci(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()


@pytest.mark.parametrize("value", [None, "", "0", "false", "False", "no", "off"])
def test_unset_or_no_is_not_ci(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()


def test_ci_1_without_an_engine_fails_every_integration_module(tmp_path: Path) -> None:
    code, output, root = _run_suite(tmp_path, "1")
    assert code == 1, output[-3000:]
    outcomes = _outcomes(root)
    assert sorted(outcomes) == MODULES, sorted(outcomes)
    for module, cases in outcomes.items():
        kinds = {outcome for outcome, _ in cases}
        assert kinds <= {"failure", "error"}, (module, cases)
        # the reason is the missing engine, named as such, not some other breakage
        assert all("container engine is needed" in message for _, message in cases), (
            module,
            cases[0],
        )


def test_outside_ci_the_run_says_how_many_were_skipped_and_why(tmp_path: Path) -> None:
    code, output, root = _run_suite(tmp_path, None)
    assert code == 0, output[-3000:]
    cases = [c for per_module in _outcomes(root).values() for c in per_module]
    assert cases and all(outcome == "skipped" for outcome, _ in cases), cases
    assert f" {len(cases)} tests skipped " in output, output[-2000:]
    summary = output[output.index(f"{len(cases)} tests skipped") :]
    counted = 0
    for line in summary.splitlines()[1:]:
        if " skipped: " in line:
            count, reason = line.split(" skipped: ", 1)
            assert "container engine is needed" in reason, line
            counted += int(count)
    assert counted == len(cases), summary
