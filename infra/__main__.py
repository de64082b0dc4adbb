"""`pulumi up` entry point: read the stack's config, declare the stack, export its outputs."""

import sys
from pathlib import Path

import pulumi

# Pulumi runs this file from infra/; make the repository importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.errors import ConfigError
from infra.program import ElizaDbStack
from infra.settings import config_from_pulumi_runtime, load_settings

stack = pulumi.get_stack()
try:
    raw = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    settings = load_settings(stack, config_from_pulumi_runtime(raw), f"Pulumi.{stack}.yaml")
except ConfigError as err:
    raise pulumi.RunError(str(err)) from None

for key, value in ElizaDbStack(settings).outputs.items():
    pulumi.export(key, value)
