"""`elizadb restore --into-stack NAME`: a new stack deployed from another stack's repository, at a
point in time or at the end of its archive. The source may run, be down, or be gone but for its
backup volume, and either stack may run on one host or on several, with either HA engine.

  1. refuse a name that has containers or volumes on any of its hosts; make the new stack's
     networks, volumes and images; read the source's catalog and refuse a target it cannot
     reach;
  2. copy the source's repository into the new stack's backup volume, so the two never write
     into one repository: a job on the repository's host when both stacks keep it on one
     engine, else a tar of it carried through eliza-db from one engine to the other;
  3. restore and recover the new stack's first node, the way its engine does it:
     builtin (elizadb/ops/restore.py) promotes the restored node alone; Patroni
     (elizadb/ops/restore_patroni.py) bootstraps a new cluster from the restore, with its etcd
     members (and, on several hosts, the backup agent the restore job reads through) started
     first;
  4. `elizadb up` for the rest, then a full backup of the new timeline.
A failure before step 4 removes the new stack: it holds nothing its source's repository does not.
"""

from __future__ import annotations

import datetime as dt
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO

import docker

from elizadb.engine import Engines, VolumeMount, export_volume, is_running, on
from elizadb.errors import UsageError
from elizadb.local import deploy
from elizadb.local.apply import REMOTE_IMAGE, Applier
from elizadb.local.hosts import stack_engines
from elizadb.ops import restore, restore_patroni
from elizadb.ops.backup import check_archiving, image_ref, read_catalog
from elizadb.ops.backup_engine import BackupError, running_primary, stack_job
from elizadb.ops.restore import Progress, RecoveryTarget, RestoreReport, check_target
from infra.components.backup import agent_name
from infra.components.common import LABEL_NODE, LABEL_ROLE, LABEL_STACK, stack_filter
from infra.render.pgbackrest import CONF_PATH, render_pgbackrest_conf
from infra.settings import StackSettings
from infra.topology import BACKUP_MOUNT, topology

# Where the copy job finds the source's repository: its volume, or the tar carried in.
SOURCE_REPO = "/var/lib/elizadb/source-repo"
STANZA_INFO = "backup/elizadb/backup.info"


def restore_into_stack(
    source: StackSettings,
    dest: StackSettings,
    target: RecoveryTarget,
    progress: Progress,
    project_dir: Path,
    *,
    backup_after: bool = True,
    recovery_timeout_s: float = 3600,
) -> RestoreReport:
    """Deploy `dest` from `source`'s repository at `target`."""
    if source.stack == dest.stack:
        raise UsageError(
            "--into-stack names the stack itself; use --in-place to restore it in place"
        )
    total = time.monotonic()
    sources, engines = stack_engines(source), stack_engines(dest)
    src_topo, topo = topology(source), topology(dest)
    for _, client in engines.all():
        _refuse_existing(client, dest.stack)
    declaration = deploy.declare_stack(dest)
    image = image_ref(declaration)
    applier = Applier(engines, dest.stack, progress)
    source_agent = agent_name(src_topo)
    same_engine = _engine_of(sources, source_agent) == _engine_of(engines, agent_name(topo))
    try:
        applier.prepare(declaration)
        if not same_engine:
            # The job that reads the source's repository runs on its host, from this image.
            image_decl = declaration.of_type(REMOTE_IMAGE)[0]
            Applier(on(sources, source_agent), dest.stack, progress).ensure_image(image_decl)
        catalog = read_catalog(sources, source, image)
        check_target(target, catalog, dt.datetime.now(dt.UTC))
        if running_primary(sources, src_topo) is not None and is_running(sources, source_agent):
            progress(f"archiving {source.stack}'s current WAL segment (pgbackrest check)")
            check_archiving(sources, source)
    except Exception:
        # Nothing of value was made yet: leave no half-made stack behind.
        applier.down(delete_volumes=True)
        raise
    node = restore.declared_primary(declaration, topo)
    report = RestoreReport(dest.stack, node.name, target.describe())
    report.seconds["prepare"] = time.monotonic() - total
    try:
        progress(
            f"copying {source.stack}'s backup repository into {topo.backup_volume_name}"
            + ("" if same_engine else f" (from host {sources.host_of(source_agent)}'s engine)")
        )
        started = time.monotonic()
        _copy_repository(sources, source, engines, dest, image, same_engine)
        report.seconds["copy-repository"] = time.monotonic() - started
        if dest.patroni:
            restore_patroni.bootstrap_new_stack(
                applier, dest, declaration, image, target, report, progress, recovery_timeout_s
            )
        else:
            restore.recover_new_stack(
                engines, dest, declaration, image, target, report, progress, recovery_timeout_s
            )
    except Exception:
        # The new stack holds nothing that its source's repository does not: none of it stays.
        progress(f"the restore failed: removing stack {dest.stack} (the source is untouched)")
        applier.down(delete_volumes=True)
        raise
    report.restored_bytes = restore.restored_bytes(catalog, report.backup_set)
    restore.finish(
        engines, dest, node, report, progress, project_dir, backup_after, not topo.multi_host
    )
    report.seconds["total"] = time.monotonic() - total
    return report


def _engine_of(engines: Engines, container: str) -> object:
    """What identifies the engine that runs `container`: its host's URL and certificates (None:
    DOCKER_HOST)."""
    return engines.hosts.get(engines.host_of(container))


def _refuse_existing(client: docker.DockerClient, stack: str) -> None:
    label = stack_filter(stack)
    containers = client.containers.list(all=True, filters=label)
    volumes = client.volumes.list(filters=label)
    if containers or volumes:
        names = ", ".join(
            sorted([str(c.name) for c in containers] + [str(v.name) for v in volumes])
        )
        raise UsageError(
            f"stack {stack} already exists ({names}); restore into a new name, or remove it "
            f"first with `elizadb down --stack {stack} --delete-volumes`"
        )


def _copy_repository(
    sources: Engines,
    source: StackSettings,
    engines: Engines,
    dest: StackSettings,
    image: str,
    same_engine: bool,
) -> None:
    """The source's repository into the new stack's empty backup volume (`elizadb-backup
    copy-repo` checks both and gives the files to postgres)."""
    src_topo, topo = topology(source), topology(dest)

    def copy(mounts: list[VolumeMount], archive: tuple[str, IO[bytes]] | None = None) -> None:
        stack_job(
            on(engines, agent_name(topo)),
            image=image,
            name=f"{topo.prefix}-copy-repo",
            stack=dest.stack,
            command=["backup", "copy-repo", SOURCE_REPO],
            mounts=[VolumeMount(topo.backup_volume_name, BACKUP_MOUNT), *mounts],
            files={CONF_PATH: render_pgbackrest_conf(dest, topo)},
            archive=archive,
        )

    if same_engine:
        copy([VolumeMount(src_topo.backup_volume_name, SOURCE_REPO, read_only=True)])
        return
    # Spooled to an unnamed file (no other process can open it): a repository holds the data.
    with tempfile.TemporaryFile() as spool:
        export_volume(
            on(sources, agent_name(src_topo)),
            image=image,
            name=f"{topo.prefix}-read-source-repo",
            labels={LABEL_STACK: dest.stack, LABEL_ROLE: "backup-job", LABEL_NODE: "copy-repo"},
            volume=src_topo.backup_volume_name,
            path=SOURCE_REPO,
            out=spool,
        )
        _check_repository_archive(spool, source.stack)
        copy([], (str(Path(SOURCE_REPO).parent), spool))


def _check_repository_archive(spool: IO[bytes], stack: str) -> None:
    """Refuse an archive without the stanza's backup.info, and cut it at its end-of-archive
    blocks (engine.tar_files says why Podman needs that), ready to be read from the start."""
    spool.seek(0)
    root = Path(SOURCE_REPO).name
    with tarfile.open(fileobj=spool, mode="r:") as tar:
        names = set(tar.getnames())
        end = tar.offset
    if f"{root}/{STANZA_INFO}" not in names:
        raise BackupError(
            f"stack {stack}'s backup volume holds no pgBackRest repository (no {STANZA_INFO}); "
            f"take a backup of it first (`elizadb backup --stack {stack}`)"
        )
    spool.truncate(end)
    spool.seek(end)
    spool.write(bytes(2 * tarfile.BLOCKSIZE))
    spool.seek(0)
