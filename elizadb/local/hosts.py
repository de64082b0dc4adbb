"""The engines a stack's parts run on (elizadb:hosts, elizadb:placement), for everything the
CLI does to its containers: one client per host, and the host of each container by name."""

from __future__ import annotations

from elizadb.engine import Engines, HostEngine
from infra.settings import StackSettings
from infra.topology import topology


def stack_engines(settings: StackSettings) -> Engines:
    """Nodes and etcd members on their hosts; the pooler, the router, the jobs and the backup
    agent on the pooler's. A stack that declares no host has one, DOCKER_HOST's engine."""
    topo = topology(settings)
    placement = {n.name: topo.node_host(n) for n in topo.nodes}
    placement.update({m.name: topo.etcd_host(m) for m in topo.etcd})
    hosts = {
        name: HostEngine(settings.host(name).url, settings.host(name).cert_path)
        for name in settings.host_names
    }
    return Engines(hosts, placement, topo.pooler_host)
