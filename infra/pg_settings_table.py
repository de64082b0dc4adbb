"""The PostgreSQL parameters of the image's server, as a committed table (infra/data/), made by
asking that server itself: a throw-away cluster in a container of the image, `pg_settings`
after loading pgvector. `scripts/pg-settings-table` writes it; an integration test checks that
the committed table still matches the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).resolve().parent / "data" / "pg17-settings.tsv"
COLUMNS = ("name", "vartype", "unit", "min_val", "max_val", "enumvals", "context")

_QUERY = (
    "SELECT name, vartype, coalesce(unit, ''), coalesce(min_val, ''), coalesce(max_val, ''), "
    "coalesce(array_to_string(enumvals, ','), ''), context FROM pg_settings ORDER BY name"
)
_PSQL = "psql -h /tmp -U postgres -X -q -At"

# Runs as root in a container of the image; prints the table on stdout: two comment lines (the
# server version, the columns), then one tab-separated line per parameter.
DESCRIBE_SCRIPT = "\n".join(
    [
        "set -e",
        "su postgres -c 'initdb -D /tmp/describe -U postgres -A trust' >/dev/null",
        (
            'su postgres -c "pg_ctl -D /tmp/describe -l /tmp/describe.log -w '
            '-o \\"-k /tmp -c listen_addresses=\'\'\\" start" >/dev/null'
        ),
        "printf '# PostgreSQL '",
        f"su postgres -c \"{_PSQL} -c 'SHOW server_version'\"",
        "printf '# %s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' " + " ".join(COLUMNS),
        f'su postgres -c "{_PSQL} -F \'\t\' -c \\"LOAD \'vector\'\\" -c \\"{_QUERY}\\""',
    ]
)


def describe_image(client: Any, image: str) -> str:
    """The table, as the server in `image` describes itself (a docker SDK client)."""
    # Detached, waited for, then read: an attached run can lose the end of the output when the
    # container is removed as it exits (seen with Podman).
    container = client.containers.run(
        image, ["-c", DESCRIBE_SCRIPT], entrypoint=["/bin/sh"], detach=True
    )
    try:
        result = container.wait(timeout=120)
        out = container.logs(stdout=True, stderr=False).decode()
        if result.get("StatusCode") != 0:
            err = container.logs(stdout=False, stderr=True).decode()
            raise RuntimeError(f"describing the server in {image} failed: {err[-2000:]}")
        return str(out)
    finally:
        container.remove(force=True)
