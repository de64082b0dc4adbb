"""Drills: failover and switchover rehearsed against a deployed stack, with measured RTO and RPO."""
