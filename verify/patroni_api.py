"""Patroni's REST API as verify reads it: GET only, over TLS verified against the stack CA with
the host name checked (each member's host in the outputs is an address or name among the node
certificate's SANs). The API answers read-only requests from any client that trusts the CA
(`verify_client: optional` in patroni.yml), so verify needs no credential.

A request fails in one of two ways, told apart because different checks report them:

* `ApiUnreachable`: no TLS session at all (refused, timed out, certificate refused). Patroni is
  the node container's main process, so the node is down, and health.reachable says so;
* `ApiNoAnswer`: the member took the request but gave no usable answer (it closed the
  connection, timed out, answered an error status or something else than the expected JSON).
  GET /cluster and GET /config read etcd; when Patroni cannot, it closes the connection after
  its etcd read timeout.

The parsers are pure: they take the JSON Patroni 4.0 returns (tests/data/patroni/ holds real
answers) and raise ApiNoAnswer, naming the key, when the shape is not that.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ApiUnreachable(Exception):
    """No TLS session with the member's REST API."""


class ApiNoAnswer(Exception):
    """The member took the request but gave no usable answer."""


@dataclass(frozen=True)
class Reply:
    body: Any  # the parsed JSON
    server_time: float  # the member's clock (its Date header), epoch seconds


def get_json(host: str, port: int, path: str, ca_path: str, timeout_s: float) -> Reply:
    """GET `path` from the REST API at host:port; raises ApiUnreachable or ApiNoAnswer."""
    context = ssl.create_default_context(cafile=ca_path)
    conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
    try:
        try:
            conn.connect()
        except OSError as err:  # refused, timed out, or the TLS handshake (ssl.SSLError)
            raise ApiUnreachable(_why(err)) from None
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise ApiNoAnswer(f"GET {path}: no answer ({_why(err)})") from None
        if response.status != 200:
            raise ApiNoAnswer(f"GET {path}: HTTP {response.status} {response.reason}")
        try:
            body = json.loads(data)
        except ValueError as err:
            raise ApiNoAnswer(f"GET {path}: the answer is not JSON ({err})") from None
        return Reply(body, _server_time(response.getheader("Date")))
    finally:
        conn.close()


def _why(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _server_time(date: str | None) -> float:
    """The member's own clock, so that ages of its timestamps do not depend on the clock of the
    machine verify runs on; this machine's clock when the header is missing or unreadable."""
    if date:
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


# ---- GET /patroni: one member about itself ----------------------------------------------------

# GET /patroni's role of the member that runs PostgreSQL read-write ("master" before Patroni 3).
LEADING_ROLES = frozenset({"primary", "master"})


@dataclass(frozen=True)
class MemberStatus:
    name: str
    role: str  # primary, replica, demoted, ...
    state: str  # running, starting, stopped, ...
    timeline: int | None
    # When Patroni last read the cluster from etcd (epoch seconds, its clock); None if never.
    dcs_last_seen: int | None
    server_time: float  # the member's clock when it answered

    @property
    def leads(self) -> bool:
        return self.role in LEADING_ROLES

    @property
    def dcs_age(self) -> float | None:
        """Seconds since the member last read the cluster from etcd; None if it never did."""
        if not self.dcs_last_seen:
            return None
        return max(0.0, self.server_time - self.dcs_last_seen)


def parse_status(reply: Reply) -> MemberStatus:
    body = _mapping(reply.body, "GET /patroni")
    patroni = _mapping(body.get("patroni"), "GET /patroni: key patroni")
    last_seen = body.get("dcs_last_seen")
    return MemberStatus(
        name=_text(patroni, "name", "GET /patroni: patroni"),
        role=_text(body, "role", "GET /patroni"),
        state=_text(body, "state", "GET /patroni"),
        timeline=_optional_int(body, "timeline", "GET /patroni"),
        dcs_last_seen=_optional_int(body, "dcs_last_seen", "GET /patroni") if last_seen else None,
        server_time=reply.server_time,
    )


# ---- GET /cluster: the cluster as etcd holds it ------------------------------------------------


@dataclass(frozen=True)
class ClusterMember:
    name: str
    role: str  # leader, sync_standby, quorum_standby, replica, standby_leader
    state: str  # running (the leader), streaming, in archive recovery, stopped, ...
    timeline: int | None


def parse_cluster(reply: Reply) -> tuple[ClusterMember, ...]:
    body = _mapping(reply.body, "GET /cluster")
    members = body.get("members")
    if not isinstance(members, list):
        raise ApiNoAnswer(f"GET /cluster: members is {members!r}, not a list")
    found = []
    for i, raw in enumerate(members):
        where = f"GET /cluster: members[{i}]"
        item = _mapping(raw, where)
        found.append(
            ClusterMember(
                name=_text(item, "name", where),
                role=_text(item, "role", where),
                state=_text(item, "state", where),
                timeline=_optional_int(item, "timeline", where),
            )
        )
    return tuple(found)


# ---- GET /config: the dynamic configuration ----------------------------------------------------


def parse_config(reply: Reply) -> Mapping[str, Any]:
    config = _mapping(reply.body, "GET /config")
    postgresql = config.get("postgresql", {})
    parameters = _mapping(postgresql, "GET /config: postgresql").get("parameters", {})
    _mapping(parameters, "GET /config: postgresql.parameters")
    return config


# ---- shapes ------------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ApiNoAnswer(f"{where}: expected a JSON object, got {value!r:.200}")
    return value


def _text(node: Mapping[str, Any], key: str, where: str) -> str:
    value = node.get(key)
    if not isinstance(value, str):
        raise ApiNoAnswer(f"{where}: {key} is {value!r}, not a string")
    return value


def _optional_int(node: Mapping[str, Any], key: str, where: str) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiNoAnswer(f"{where}: {key} is {value!r}, not an integer")
    return value
