"""What the Pulumi program declares when a builtin stack is moved to Patroni (issue 11, item 8),
under Pulumi's mock runtime: each node's data and socket volumes, and its container, stay the
same Pulumi resources (so that `pulumi up` replaces the container and never deletes a volume or
makes a second one of its name), with the same names and protection; and the bootstrap job makes
the rewind role that Patroni makes only for a cluster it initialises itself."""

from __future__ import annotations

import itertools

import pytest

from elizadb.local.apply import CONTAINER, VOLUME
from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.state import StateFile
from infra.components.postgres import POSTGRES_NODE_TYPE
from infra.render import paths
from infra.settings import load_settings

STACK = "mv"


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Declaration, Declaration]:
    """The production stack as the builtin engine declares it, then as Patroni does (one state:
    the same secrets, as in a real move)."""
    state = StateFile(STACK, tmp_path_factory.mktemp("move"))
    builtin = declare(load_settings(STACK, {"environment": "production"}, "test"), state)
    moved = {"environment": "production", "ha": {"engine": "patroni"}}
    return builtin, declare(load_settings(STACK, moved, "test"), state)


def _chain(decl: Declaration, resource: Declared) -> list[Declared]:
    """The resource and its ancestors up to the stack's component, top first."""
    chain = [resource]
    while chain[0].parent in decl.by_urn:
        chain.insert(0, decl.by_urn[chain[0].parent])
    return chain


def _urn(types: tuple[str, ...], name: str) -> str:
    """A URN as the Pulumi engine makes it: every ancestor's type, then the resource's."""
    return f"urn:pulumi:{STACK}::elizadb::{'$'.join(types)}::{name}"


def known_as(decl: Declaration, resource: Declared) -> set[str]:
    """Every URN under which Pulumi takes an existing resource for this one: its own, and those
    its aliases give it, where a component's alias carries over to everything below it (the
    engine's rule for aliases of a parent)."""
    options = [sorted({r.typ, *r.alias_types}) for r in _chain(decl, resource)]
    return {_urn(types, resource.name) for types in itertools.product(*options)}


def own_urn(decl: Declaration, resource: Declared) -> str:
    return _urn(tuple(r.typ for r in _chain(decl, resource)), resource.name)


def _by_name(decl: Declaration, typ: str) -> dict[str, Declared]:
    return {r.inputs["name"]: r for r in decl.of_type(typ)}


def test_every_volume_stays_the_same_resource_with_the_same_protection(
    declared: tuple[Declaration, Declaration],
) -> None:
    builtin, patroni = declared
    before, after = _by_name(builtin, VOLUME), _by_name(patroni, VOLUME)
    # Patroni adds etcd's volumes; none of the builtin engine's goes away.
    assert set(before) <= set(after)
    assert f"elizadb-{STACK}-primary-data" in before
    for name, old in before.items():
        new = after[name]
        assert own_urn(builtin, old) in known_as(patroni, new), name
        kept = ("protect", "retain_on_delete", "delete_before_replace", "ignore_changes")
        assert {k: getattr(new, k) for k in kept} == {k: getattr(old, k) for k in kept}, name
        if name.endswith("-data"):
            assert new.protect and new.retain_on_delete, name


def test_each_node_container_is_replaced_rather_than_made_twice(
    declared: tuple[Declaration, Declaration],
) -> None:
    builtin, patroni = declared
    before, after = _by_name(builtin, CONTAINER), _by_name(patroni, CONTAINER)
    nodes = [f"elizadb-{STACK}-{n}" for n in ("primary", "replica-1", "replica-2")]
    for name in nodes:
        old, new = before[name], after[name]
        assert old.inputs["command"] != new.inputs["command"]  # replaced: a new command
        assert own_urn(builtin, old) in known_as(patroni, new), name
        parent = patroni.by_urn[new.parent]
        assert POSTGRES_NODE_TYPE in parent.alias_types
    # Without the alias the node containers and volumes would be new resources of the same
    # names: the check above must be able to fail.
    unaliased = {own_urn(patroni, after[n]) for n in nodes}
    assert not unaliased & {own_urn(builtin, before[n]) for n in nodes}


def test_the_job_makes_the_rewind_role_patroni_makes_only_when_it_initialises(
    declared: tuple[Declaration, Declaration],
) -> None:
    builtin, patroni = declared

    def bootstrap_sql(decl: Declaration) -> str:
        job = _by_name(decl, CONTAINER)[f"elizadb-{STACK}-bootstrap"]
        return str(
            next(u["content"] for u in job.inputs["uploads"] if u["file"] == paths.BOOTSTRAP_SQL)
        )

    sql = bootstrap_sql(patroni)
    assert "SELECT format('CREATE ROLE %I', 'eliza_rewind')" in sql
    assert 'ALTER ROLE "eliza_rewind" WITH LOGIN NOSUPERUSER' in sql
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in sql.split('ALTER ROLE "eliza_rewind"')[1]
    for function in ("pg_ls_dir(text, boolean, boolean)", "pg_read_binary_file(text)"):
        assert f'GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO "eliza_rewind";' in sql
    assert "eliza_rewind" not in bootstrap_sql(builtin)
