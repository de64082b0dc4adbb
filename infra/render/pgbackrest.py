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

A stack on several hosts cannot share a volume between its nodes, so there the backup agent is a
repository host: the repository is its volume alone, and pgBackRest's TLS servers join the parts
(pgBackRest's own protocol, no SSH): every node pushes and fetches WAL through the agent's server
(repo1-host), and the agent backs up through each node's server (pg1..pgN-host), asking them
which one is primary. Each side checks the other's certificate against the stack's CA, and each
server admits only the stack's certificate (its common name, for the stanza alone): the one
certificate every part of the stack already holds (infra/components/tls.py).
"""

from __future__ import annotations

from infra.render import HEADER, paths
from infra.settings import StackSettings
from infra.topology import BACKUP_MOUNT, BACKUP_SERVER_PORT, DATA_MOUNT, PG_PORT, Topology

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
IO_TIMEOUT_S = 5


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
        "compress-type": COMPRESS_TYPE,
        "process-max": str(PROCESS_MAX),
        # A backup starts with an immediate checkpoint rather than waiting for the next one.
        "start-fast": "y",
        # Messages go to the console (the container's log, or PostgreSQL's log for archive-push),
        # never to files inside a container.
        "log-level-file": "off",
    }


def _pg(index: int = 1) -> dict[str, str]:
    return {
        f"pg{index}-path": PGDATA,
        f"pg{index}-port": str(PG_PORT),
        f"pg{index}-socket-path": SOCKET_DIR,
        f"pg{index}-user": "postgres",
    }


def client_name(topo: Topology) -> str:
    """The common name of the stack's certificate (infra/components/tls.py), which every
    pgBackRest client of a stack on several hosts presents."""
    return topo.primary.name


def _tls_client(prefix: str) -> dict[str, str]:
    """How a client (`repo1-host-...` or `pgN-host-...`) reaches a pgBackRest TLS server."""
    return {
        f"{prefix}-type": "tls",
        f"{prefix}-ca-file": paths.CA_CERT,
        f"{prefix}-cert-file": paths.SERVER_CERT,
        f"{prefix}-key-file": paths.SERVER_KEY,
    }


def _tls_server(topo: Topology) -> dict[str, str]:
    """This container's pgBackRest server (stacks on several hosts): on every address, the port
    published on the host's address; only the stack's certificate, for the stanza alone."""
    return {
        "tls-server-address": "*",
        "tls-server-port": str(BACKUP_SERVER_PORT),
        "tls-server-ca-file": paths.CA_CERT,
        "tls-server-cert-file": paths.SERVER_CERT,
        "tls-server-key-file": paths.SERVER_KEY,
        "tls-server-auth": f"{client_name(topo)}={STANZA}",
    }


def render_pgbackrest_conf(settings: StackSettings, topo: Topology) -> str:
    """The node file: identical on every node and independent of the node's role, of scaling and
    of the backup schedule, so that none of these restarts a server. On several hosts it names
    the repository host instead of a path."""
    del settings  # nothing a node needs depends on the stack settings
    if not topo.multi_host:
        return _lines(
            {"global": {**_global(), "repo1-path": BACKUP_MOUNT}, STANZA: _pg()},
            "PostgreSQL nodes: archive-push / archive-get, and restore jobs",
        )
    address, port = topo.repository_endpoint
    options = {
        **_global(),
        # pgBackRest retries a connection for io-timeout seconds (60 by default). PostgreSQL
        # stops only once its archiver has tried a pending segment three times, so while the
        # repository host is unreachable a node's restart or switchover would wait three
        # minutes; with 5 s it waits at most 15 s, and a failed segment is simply retried.
        "io-timeout": str(IO_TIMEOUT_S),
        "repo1-host": address,
        "repo1-host-port": str(port),
        **_tls_client("repo1-host"),
        **_tls_server(topo),
    }
    return _lines(
        {"global": options, STANZA: _pg()},
        "PostgreSQL nodes: archive-push / archive-get through the repository host, and the "
        "server the backup agent backs up through",
    )


def render_agent_conf(settings: StackSettings, topo: Topology) -> str:
    """The backup agent's file: the node file plus what only backup and expire read: retention,
    and block incremental backups (an incremental stores the changed blocks of a changed file,
    not the whole file: an HNSW index or a table under 1 GB is one file, touched by any write;
    block incremental needs bundling). On several hosts it reaches every node through the
    node's server, and serves the nodes' WAL."""
    options = {
        **_global(),
        "repo1-path": BACKUP_MOUNT,
        "repo1-retention-full": str(settings.backup.retention_full),
        "repo1-retention-full-type": "count",
        "repo1-bundle": "y",
        "repo1-block": "y",
    }
    if not topo.multi_host:
        return _lines(
            {"global": options, STANZA: _pg()},
            "backup agent: backups and expiry; pg1-socket-path is given per run (the current "
            "primary)",
        )
    stanza: dict[str, str] = {}
    for index, node in enumerate(topo.nodes, start=1):
        address, port = topo.backup_endpoint(node)
        stanza |= {
            **_pg(index),
            f"pg{index}-host": address,
            f"pg{index}-host-port": str(port),
            **_tls_client(f"pg{index}-host"),
        }
    return _lines(
        {"global": {**options, **_tls_server(topo)}, STANZA: stanza},
        "backup agent: the repository host; backups of whichever node is primary, and expiry",
    )
