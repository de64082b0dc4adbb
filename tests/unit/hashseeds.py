"""Render in fresh interpreters under several hash seeds: an output that follows the iteration
order of a set or of str-keyed hashing changes between seeds, and two renders inside one
process (one seed) would never show it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEEDS = ("0", "1", "2", "4242")


def outputs_under_hash_seeds(script: str, **env: str) -> dict[str, str]:
    """What `script` prints, per PYTHONHASHSEED; fails loudly when it does not run."""
    found: dict[str, str] = {}
    for seed in SEEDS:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, **env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout, f"the script printed nothing under PYTHONHASHSEED={seed}"
        found[seed] = done.stdout
    return found


def assert_same_under_hash_seeds(script: str, **env: str) -> None:
    found = outputs_under_hash_seeds(script, **env)
    differing = [seed for seed in SEEDS if found[seed] != found[SEEDS[0]]]
    assert not differing, f"output differs from PYTHONHASHSEED={SEEDS[0]} under {differing}"
