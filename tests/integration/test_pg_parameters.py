"""The committed table of PostgreSQL parameters that settings validation uses is the image's:
the server in the stack image describes itself and the answer is the committed file, line for
line. When the image's PostgreSQL or pgvector changes, this fails: run scripts/pg-settings-table."""

from __future__ import annotations

from pathlib import Path

import pytest

from elizadb.local.apply import REMOTE_IMAGE, Applier
from elizadb.local.capture import declare
from elizadb.local.state import StateFile
from infra.pg_settings_table import TABLE_PATH, describe_image
from tests.integration.stacks import progress, require_engine, stack_settings

pytestmark = [pytest.mark.integration, pytest.mark.once]


def test_the_committed_parameter_table_is_the_images(tmp_path: Path) -> None:
    client = require_engine()
    settings = stack_settings("p9params", 48200)
    image = declare(settings, StateFile(settings.stack, tmp_path)).of_type(REMOTE_IMAGE)[0]
    Applier(client, settings.stack, progress).ensure_image(image)  # built when missing
    described = describe_image(client, image.inputs["name"])
    committed = TABLE_PATH.read_text()
    assert described.splitlines()[0] == committed.splitlines()[0], "another PostgreSQL version"
    assert described == committed, "the image's parameters differ: run scripts/pg-settings-table"
