#!/usr/bin/python3
"""elizadb-patroni-restore PATRONI_YML RESTORED_DIR — make Patroni bootstrap from a restore.

A restore job (elizadb/ops/restore.py) has put pgBackRest's restore of the node's data in
RESTORED_DIR, beside the (empty) data directory, and the cluster is gone from etcd. Patroni
bootstraps an uninitialised cluster with the method patroni.yml names, and it strips recovery
targets from postgresql.auto.conf, where pgBackRest wrote them: this adds a custom method whose
command moves the restored data into place (elizadb-backup adopt-restored) and whose
recovery_conf carries pgBackRest's recovery settings, so that Patroni replays to the target,
promotes, and only then takes the leader key.
"""

import re
import sys

import yaml

METHOD = "elizadb_restore"
# The settings of PostgreSQL's archive recovery (recovery.conf's, before PostgreSQL 12).
RECOVERY = re.compile(r"^(restore_command|recovery_target\w*)\s*=\s*'((?:[^']|'')*)'\s*$")
# pgBackRest names the folder it restored into; the node's own pg1-path is the data directory.
PG1_PATH = re.compile(r" --pg1-path=\S+")


def recovery_settings(auto_conf: str) -> dict[str, str]:
    found = {}
    for line in auto_conf.splitlines():
        match = RECOVERY.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2).replace("''", "'")
    if "restore_command" in found:
        found["restore_command"] = PG1_PATH.sub("", found["restore_command"])
    return found


def main() -> int:
    patroni_yml, restored = sys.argv[1], sys.argv[2]
    with open(f"{restored}/postgresql.auto.conf", encoding="utf-8") as handle:
        recovery = recovery_settings(handle.read())
    if "restore_command" not in recovery:
        print(f"{restored}/postgresql.auto.conf has no restore_command", file=sys.stderr)
        return 1
    with open(patroni_yml, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["bootstrap"]["method"] = METHOD
    config["bootstrap"][METHOD] = {
        "command": "/usr/local/bin/elizadb-backup adopt-restored",
        "no_params": True,
        "keep_existing_recovery_conf": False,
        "recovery_conf": recovery,
    }
    with open(patroni_yml, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=True, default_flow_style=False)
    print(f"Patroni bootstraps from the restore in {restored}: {sorted(recovery)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
