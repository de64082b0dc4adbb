"""The readiness check: a one-shot job that waits until every node and the pooler accept
connections, and fails the deploy (with its log) when one does not in time.

It stands in for the provider's `wait`, which polls the engine's health status: Docker keeps
that status current, but Podman updates it only through systemd timers, so `wait` would hang
there. Asking the servers themselves works on both. Its environment names each node's and the
pooler's container id: when one of them is replaced, the job is replaced and runs again."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

from infra.components.bootstrap import succeeded
from infra.components.common import JOB_RUN, StackInputs, container_options, labels
from infra.topology import POOLER_PORT

READY_TIMEOUT_SECONDS = 300

# Each target is name=address:port; pg_isready asks the server whether it accepts connections.
_SCRIPT = """set -eu
deadline=$(( $(date +%s) + ELIZADB_READY_TIMEOUT ))
for target in $(echo "$ELIZADB_READY_TARGETS" | tr ',' ' '); do
  name=${target%%=*}; where=${target#*=}
  until pg_isready -q -t 2 -h "${where%:*}" -p "${where##*:}"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$name ($where) does not accept connections after ${ELIZADB_READY_TIMEOUT}s" >&2
      exit 1
    fi
    sleep 1
  done
  echo "ready: $name"
done
"""


def ready_name(args: StackInputs) -> str:
    return f"{args.topo.prefix}-ready"


class ReadyCheck(pulumi.ComponentResource):
    container: docker.Container
    succeeded: pulumi.Output[docker.Container]

    def __init__(
        self,
        name: str,
        args: StackInputs,
        containers: Sequence[docker.Container],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        site = args.on(args.topo.pooler_host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:ReadyCheck", name, None, placed)
        topo = args.topo
        targets = [f"{n.name}={':'.join(map(str, topo.pg_endpoint(n)))}" for n in topo.nodes]
        targets.append(f"{topo.pooler_name}={topo.pooler_address}:{POOLER_PORT}")
        ids = pulumi.Output.all(*(c.id for c in containers)).apply(lambda v: ",".join(v))
        self.container = docker.Container(
            name,
            name=ready_name(args),
            image=site.image,
            entrypoints=["/bin/sh", "-c"],
            command=[_SCRIPT],
            envs=[
                f"ELIZADB_READY_TARGETS={','.join(targets)}",
                f"ELIZADB_READY_TIMEOUT={READY_TIMEOUT_SECONDS}",
                ids.apply(lambda v: f"ELIZADB_READY_CONTAINERS={v}"),
            ],
            labels=labels(args, "job", ready_name(args)),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=site.network.name, ipv4_address=topo.ready_address
                )
            ],
            **JOB_RUN,
            opts=container_options(self, pulumi.ResourceOptions(depends_on=list(containers))),
        )
        self.succeeded = succeeded(self.container, ready_name(args))
        self.register_outputs({"name": ready_name(args)})
