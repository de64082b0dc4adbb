"""Day-2 operations on a deployed stack: backups, restore, maintenance, failover."""
