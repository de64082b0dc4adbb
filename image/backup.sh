#!/usr/bin/env bash
# elizadb-backup: the backup agent (to be written).
echo "elizadb-backup: not implemented yet" >&2
exit 2
