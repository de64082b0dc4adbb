"""Threshold logic: each pure decision a check makes from the numbers it observed."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from verify.checks.health import connection_problem
from verify.checks.pooler import pool_problems
from verify.checks.replication import Sender, lag_problem
from verify.checks.tls import expiry_problem
from verify.synthetic import percentile, recall_at_k
from verify.thresholds import Thresholds
from verify.tls_probe import days_left

T = Thresholds()


def test_defaults_are_the_documented_ones() -> None:
    assert (T.cert_min_days, T.recall_min, T.lag_max_bytes) == (30, 0.95, 64 * 2**20)
    assert 2000 <= T.vector_rows <= 3000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recall_min": 1.5}, "recall_min = 1.5: must be a fraction from 0 to 1"),
        ({"lag_max_seconds": -1}, "lag_max_seconds = -1: must not be negative"),
        ({"cert_min_days": "30"}, "cert_min_days = '30': must be a number"),
        ({"vector_rows": 5}, "vector_rows must be at least vector_k"),
    ],
)
def test_invalid_thresholds_are_refused_by_name(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(T, **change)


def test_lag_within_both_limits_passes_and_either_limit_fails() -> None:
    def sender(lag_bytes: int | None, seconds: float | None) -> Sender:
        return Sender("elizadb_replica_1", "streaming", "elizadb_replica_1", lag_bytes, seconds)

    assert lag_problem("replica-1", sender(0, None), T) is None  # caught up, idle: NULL replay_lag
    assert lag_problem("replica-1", sender(T.lag_max_bytes, T.lag_max_seconds), T) is None
    too_far = lag_problem("replica-1", sender(T.lag_max_bytes + 1, 0.1), T)
    assert (
        too_far == "replica-1 replays 64.0 MiB / 0.1 s behind the primary (thresholds 64 MiB, 10 s)"
    )
    assert lag_problem("replica-1", sender(10, T.lag_max_seconds + 0.5), T) is not None


def test_connection_headroom() -> None:
    assert connection_problem("primary", 80, 100, 0.8) is None
    assert connection_problem("primary", 81, 100, 0.8) == (
        "primary: 81 of 100 client connection slots in use (81%, over 80%)"
    )
    assert connection_problem("primary", 0, 0, 0.8) is not None


def _pool(waiting: int, maxwait: int, maxwait_us: int = 0, database: str = "eliza") -> dict:
    return {
        "database": database,
        "user": "eliza_agent",
        "cl_active": 20,
        "cl_waiting": waiting,
        "sv_active": 20,
        "maxwait": maxwait,
        "maxwait_us": maxwait_us,
    }


def test_a_queue_in_a_pool_fails_by_length_or_by_age() -> None:
    assert pool_problems([_pool(0, 0)], T) == []
    assert pool_problems([_pool(3, 0, 500_000)], T) == []  # a brief wait under load is fine
    assert pool_problems([_pool(1, 1, 500_000)], T) == [
        (
            "pool eliza/eliza_agent: 1 client(s) waiting, the oldest for 1.5 s (20 active, 20 "
            "server connections busy; thresholds 10 clients, 1 s)"
        )
    ]
    assert len(pool_problems([_pool(11, 0)], T)) == 1
    assert pool_problems([_pool(50, 60, database="pgbouncer")], T) == []  # the admin console


def _certificate(days: float) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def test_certificate_expiry_against_the_threshold() -> None:
    assert days_left(_certificate(45)) == pytest.approx(45, abs=0.01)
    assert expiry_problem("the CA", _certificate(45), 30) is None
    problem = expiry_problem("pooler's certificate", _certificate(10), 30)
    assert problem is not None
    assert problem.startswith("pooler's certificate expires in 10.0 days (")
    assert problem.endswith("under the 30-day threshold")
    assert expiry_problem("expired", _certificate(-2), 30) is not None


def test_recall_is_the_mean_share_of_the_true_top_k_found() -> None:
    exact = [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert recall_at_k(exact, exact, 4) == 1.0
    assert recall_at_k([[1, 2, 9, 9], [5, 6, 7, 8]], exact, 4) == 0.75
    assert recall_at_k([[4, 3, 2, 1], [8, 7, 6, 5]], exact, 4) == 1.0  # order does not matter
    assert recall_at_k([[1], [5]], exact, 4) == 0.25  # fewer rows than k count as misses
    assert recall_at_k([], [], 4) == 0.0


def test_p95_is_an_observed_value_by_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 95) == 95.0
    assert percentile([3.0, 1.0, 2.0], 95) == 3.0
    assert percentile([7.0], 50) == 7.0
    with pytest.raises(ValueError):
        percentile([], 95)


def test_required_synchronous_standbys_follow_postgresql_syntax() -> None:
    from verify.checks.replication import required_sync_standbys

    assert required_sync_standbys("") == 0
    assert required_sync_standbys('ANY 1 ("elizadb_primary", "elizadb_replica_1")') == 1
    assert required_sync_standbys("FIRST 2 (a, b, c)") == 2
    assert required_sync_standbys("3 (a, b, c)") == 3
    assert required_sync_standbys("a, b") == 1
    assert required_sync_standbys("*") == 1
