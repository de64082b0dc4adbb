"""eliza-db: the PostgreSQL that ElizaOS agents keep their memories in, per environment."""
