"""The Pulumi program of eliza-db: settings, pure renderers and components."""
