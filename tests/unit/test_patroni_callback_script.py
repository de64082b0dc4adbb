"""image/patroni-callback.py: a node that has become Patroni's leader hands etcd's leadership to
a member on another host when the member on its own host leads etcd, and does nothing
otherwise. etcdctl is replaced by a script that answers as three members would and logs what it
was asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "image" / "patroni-callback.py"
MEMBERS = {"10.0.0.1:2379": 0xA1, "10.0.0.2:2379": 0xB2, "10.0.0.3:2379": 0xC3}

FAKE_ETCDCTL = """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
endpoint = next(a for a in args if a.startswith("--endpoints=")).split("//", 1)[1]
with open(os.environ["ETCDCTL_LOG"], "a") as log:
    log.write(" ".join([endpoint] + [a for a in args if not a.startswith("--")]) + "\\n")
answers = json.loads(os.environ["ETCD_ANSWERS"])
if endpoint not in answers:
    sys.exit("context deadline exceeded")
if "move-leader" in args:
    print("Leadership transferred")
    sys.exit(0)
member_id, leader = answers[endpoint]
print(json.dumps([{"Endpoint": endpoint,
    "Status": {"header": {"member_id": member_id}, "leader": leader}}]))
"""


def _run(
    tmp_path: Path, leader: int, role: str = "primary", down: tuple[str, ...] = ()
) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "etcdctl"
    fake.write_text(FAKE_ETCDCTL)
    fake.chmod(0o755)
    log = tmp_path / "etcdctl.log"
    log.unlink(missing_ok=True)
    log.touch()
    answers = {ep: (mid, leader) for ep, mid in MEMBERS.items() if ep not in down}
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ETCDCTL_LOG": str(log),
        "ETCD_ANSWERS": json.dumps(answers),
    }
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "10.0.0.1:2379",
            ",".join(MEMBERS),
            "on_role_change",
            role,
            "elizadb-prod",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in log.read_text().splitlines() if "move-leader" in line]


def test_the_leaders_node_moves_etcds_leadership_from_its_own_host(tmp_path: Path) -> None:
    assert _run(tmp_path, leader=0xA1) == ["10.0.0.1:2379 move-leader b2"]


def test_nothing_moves_when_etcd_is_led_from_another_host(tmp_path: Path) -> None:
    assert _run(tmp_path, leader=0xB2) == []


def test_a_replica_moves_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path, leader=0xA1, role="replica") == []


def test_the_leadership_goes_to_a_member_that_answers(tmp_path: Path) -> None:
    assert _run(tmp_path, leader=0xA1, down=("10.0.0.2:2379",)) == ["10.0.0.1:2379 move-leader c3"]
    assert _run(tmp_path, leader=0xA1, down=("10.0.0.2:2379", "10.0.0.3:2379")) == []


def test_a_silent_member_on_its_own_host_moves_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path, leader=0xA1, down=("10.0.0.1:2379",)) == []
