#!/bin/sh
# docker-compose.yml: one database per service on the single host (the chart gives each its own
# cluster). Each is owned by its migration role toex_<service>, which `migrate` connects as, and
# served by its runtime role toex_<service>_app, which `migrate` grants rows in and out and only
# INSERT and SELECT on the audit log. Keycloak gets a database of its own.
set -eu

sql() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

for service in tasking entity pnd comms safeguarding oversight; do
    sql -v owner="toex_${service}" -v app="toex_${service}_app" \
        -v owner_password="$TOEX_POSTGRES_OWNER_PASSWORD" -v app_password="$TOEX_POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"app" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"owner" OWNER :"owner";
SQL
done

sql -v password="$TOEX_KEYCLOAK_DB_PASSWORD" <<'SQL'
CREATE ROLE keycloak LOGIN PASSWORD :'password';
CREATE DATABASE keycloak OWNER keycloak;
SQL
