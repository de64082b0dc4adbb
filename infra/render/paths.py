"""Where rendered files live inside the containers (one place, shared by renderers, the
components and the entrypoint's expectations in image/entrypoint.sh)."""

ETC = "/etc/elizadb"
PRIVATE = "/var/lib/postgresql/private"  # entrypoint copies keys and secrets here, mode 0600

POSTGRESQL_CONF = f"{ETC}/postgresql.conf"
PG_HBA_CONF = f"{ETC}/pg_hba.conf"
PGBOUNCER_INI = f"{ETC}/pgbouncer.ini"
BOOTSTRAP_SQL = f"{ETC}/job/bootstrap.sql"
SQL_DIR = f"{ETC}/sql"

CA_CERT = f"{ETC}/tls/ca.crt"
SERVER_CERT = f"{ETC}/tls/server.crt"
SERVER_KEY_UPLOAD = f"{ETC}/tls/server.key"
SERVER_KEY = f"{PRIVATE}/server.key"

SUPERUSER_PASSWORD_UPLOAD = f"{ETC}/secrets/superuser"
PGPASS_UPLOAD = f"{ETC}/secrets/pgpass"
PGPASS = f"{PRIVATE}/pgpass"
USERLIST_UPLOAD = f"{ETC}/secrets/userlist.txt"
USERLIST = f"{PRIVATE}/userlist.txt"
