"""One Pulumi ComponentResource per concern; each child is parented to its component."""
