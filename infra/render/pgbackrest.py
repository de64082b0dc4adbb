"""pgBackRest: the repository, the stanza and the commands PostgreSQL runs to archive and fetch WAL.

One repository per stack: the stack's backup volume, mounted at /var/lib/pgbackrest on every
PostgreSQL node and on the backup agent. Every node archives into it (`archive_command`, which
PostgreSQL runs only while the node is primary: archive_mode = on) and fetches from it
(`restore_command`, during recovery and while a standby), so any node may be promoted without a
configuration change. The node file is the same on every node.

The backup agent (infra/components/backup.py) takes the backups. pgBackRest reads the data
files of the node it backs up from a local path and talks to the server over its Unix socket;
the agent mounts every node's data volume and socket volume, finds the node that is read-write
now, and points /var/lib/postgresql/data at that node's volume (pgBackRest checks that pg1-path
equals the server's data_directory, which is the same path on every node). The agent's file adds
what only backups and expiry read: retention.

The stanza is one name for every stack ("elizadb"): a repository copied into a new stack (a
restore into another stack) then serves that stack unchanged.
"""

from __future__ import annotations

from infra.render import HEADER
from infra.settings import StackSettings
from infra.topology import BACKUP_MOUNT, DATA_MOUNT, PG_PORT

STANZA = "elizadb"
CONF_PATH = "/etc/pgbackrest/pgbackrest.conf"
# The image's PGDATA (image/Containerfile): a folder inside the data volume's mount point.
PGDATA = f"{DATA_MOUNT}/pg17"
SOCKET_DIR = "/run/postgresql"
# Where the backup agent mounts each node's volumes: NODES_DIR/<node>/data and .../run.
NODES_DIR = "/var/lib/elizadb/nodes"
# lz4: the fastest of pgBackRest's codecs. Embeddings (float32) hardly compress, so a slower,
# tighter codec would cost backup and restore time for little space.
COMPRESS_TYPE = "lz4"
PROCESS_MAX = 2


def archive_command() -> str:
    return f"pgbackrest --stanza={STANZA} archive-push %p"


def restore_command() -> str:
    return f'pgbackrest --stanza={STANZA} archive-get %f "%p"'


def _lines(sections: dict[str, dict[str, str]], comment: str) -> str:
    out = [f"# {HEADER}", f"# {comment}"]
    for section, options in sections.items():
        out += ["", f"[{section}]"]
        out += [f"{key}={value}" for key, value in sorted(options.items())]
    return "\n".join(out) + "\n"


def _global() -> dict[str, str]:
    return {
        "repo1-path": BACKUP_MOUNT,
        "compress-type": COMPRESS_TYPE,
        "process-max": str(PROCESS_MAX),
        # A backup starts with an immediate checkpoint rather than waiting for the next one.
        "start-fast": "y",
        # Messages go to the console (the container's log, or PostgreSQL's log for archive-push),
        # never to files inside a container.
        "log-level-file": "off",
    }


def _stanza() -> dict[str, str]:
    return {
        "pg1-path": PGDATA,
        "pg1-port": str(PG_PORT),
        "pg1-socket-path": SOCKET_DIR,
        "pg1-user": "postgres",
    }


def render_pgbackrest_conf(settings: StackSettings) -> str:
    """The node file: identical on every node and independent of the node's role, of scaling and
    of the backup schedule, so that none of these restarts a server."""
    del settings  # nothing a node needs depends on the stack settings
    return _lines(
        {"global": _global(), STANZA: _stanza()},
        "PostgreSQL nodes: archive-push / archive-get, and restore jobs",
    )


def render_agent_conf(settings: StackSettings) -> str:
    """The backup agent's file: the node file plus what only backup and expire read: retention,
    and block incremental backups (an incremental stores the changed blocks of a changed file,
    not the whole file: an HNSW index or a table under 1 GB is one file, touched by any write;
    block incremental needs bundling)."""
    options = {
        **_global(),
        "repo1-retention-full": str(settings.backup.retention_full),
        "repo1-retention-full-type": "count",
        "repo1-bundle": "y",
        "repo1-block": "y",
    }
    return _lines(
        {"global": options, STANZA: _stanza()},
        "backup agent: backups and expiry; pg1-socket-path is given per run (the current primary)",
    )
