"""Which node is primary, for a stack whose failover Patroni decides (output haEngine =
patroni): its outputs name the nodes, but only the nodes know which one leads now. The run asks
each node, and from then on treats the one that is read-write as the primary and the others as
replicas; every check then judges the cluster as it is, not as it was first deployed.

A builtin stack's outputs follow its failovers (elizadb:primaryNode), so they are used as given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from verify.outputs import Endpoint, Outputs


def follow_leader(outputs: Outputs, is_primary: Callable[[Endpoint], bool | None]) -> Outputs:
    """`outputs` with the one read-write node as the primary; unchanged when that is already so,
    when the stack is not Patroni's, or when not exactly one node is read-write (the checks
    then report what they find)."""
    if outputs.ha_engine != "patroni":
        return outputs
    writable = [n for n in outputs.nodes if is_primary(n)]
    if len(writable) != 1 or writable[0] == outputs.primary:
        return outputs
    leader = writable[0]
    replicas = tuple(n for n in outputs.nodes if n != leader)
    readonly = tuple(_readonly_uri(outputs, r) for r in replicas)
    return replace(
        outputs,
        primary=leader,
        replicas=replicas,
        connections=replace(outputs.connections, readonly_replicas=readonly),
    )


def _readonly_uri(outputs: Outputs, node: Endpoint) -> str:
    """The read-only role's connection string for `node`: the one the outputs give for it, or
    (for the node that was deployed as the primary) another replica's, pointed at it."""
    uris = outputs.connections.readonly_replicas
    for uri in uris:
        params = conninfo_to_dict(uri)
        if params.get("host") == node.host and str(params.get("port")) == str(node.port):
            return uri
    return make_conninfo(uris[0], host=node.host, port=str(node.port))
