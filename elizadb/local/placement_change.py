"""A data volume stays on its host: `up` refuses a placement that would move a part holding data.

A PostgreSQL node's data and an etcd member's copy of the cluster state live in a volume on the
Docker host the part runs on. Declared on another host, the part would start there on a new,
empty volume, while its data stayed behind: a builtin node would come up as an empty database,
and under Patroni a second member of the same name would join, empty, while the first still ran
(or, for an etcd member, a stranger to the etcd cluster). So `up` compares, before anything is
touched, where each data volume is with where the placement puts its part. Moving data between
hosts is not something `up` does.
"""

from __future__ import annotations

from elizadb.engine import Engines
from elizadb.errors import ElizaDbError
from infra.components.common import stack_filter
from infra.placement import etcd_part
from infra.settings import StackSettings
from infra.topology import topology


class PlacementChangeError(ElizaDbError):
    """The placement would move a part away from its data: nothing was changed."""

    exit_code = 2


def declared_volume_hosts(settings: StackSettings) -> dict[str, tuple[str, str]]:
    """Each data volume of the stack: the part it belongs to and the host the placement gives
    that part."""
    topo = topology(settings)
    where = {topo.volume_name(n): (n.short, topo.node_host(n)) for n in topo.nodes}
    for member in topo.etcd:
        where[topo.etcd_volume_name(member)] = (etcd_part(member.index), topo.etcd_host(member))
    return where


def misplaced(declared: dict[str, tuple[str, str]], found: dict[str, list[str]]) -> list[str]:
    """What would move: `found` is each host's volumes of the stack, by name."""
    problems = []
    for host, volumes in sorted(found.items()):
        for volume in sorted(volumes):
            part, wanted = declared.get(volume, ("", host))
            if wanted != host:
                problems.append(
                    f"{part}'s data ({volume}) is on host {host}, and elizadb:placement.{part} "
                    f"now says {wanted}"
                )
    return problems


def check_placement_change(settings: StackSettings, engines: Engines) -> None:
    """Refuse (exit 2, nothing touched) a placement that moves a part away from its data."""
    label = stack_filter(settings.stack)
    found = {
        host: [str(v.name) for v in client.volumes.list(filters=label)]
        for host, client in engines.all()
    }
    problems = misplaced(declared_volume_hosts(settings), found)
    if problems:
        raise PlacementChangeError(
            f"the placement moves parts away from their data: {'; '.join(problems)}. `up` "
            "does not move data between hosts: it would start each of them empty on its new "
            "host. Keep every PostgreSQL node and etcd member on the host that holds its data "
            "(set elizadb:placement back). Nothing was changed."
        )
