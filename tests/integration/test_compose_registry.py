"""docker-compose.yml's `registry` (Apicurio 3.0.9 on PostgreSQL) run as real processes: its settings keep the schemas."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from hub.contract.evolution import publish
from hub.contract.registry import COMPATIBILITY, SchemaRegistry
from hub.contract.schemas import Catalogue
from hub.core.config import LocalConfig
from hub.demo.local import REGISTRY_POM, resolve_registry
from tests import pg
from tests.apicurio import Registry, java_or_unavailable
from tests.compose import interpolate
from tests.conftest import PORT_OFFSET, ROOT

pytestmark = pytest.mark.integration

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
REGISTRY_PORT = 29700 + PORT_OFFSET  # this test's registry; its PostgreSQL searches upwards from one above
PG_FIRST_PORT = 29701 + PORT_OFFSET
CCOMPAT = "application/vnd.schemaregistry.v1+json"
# compose's interpolation forms these two services use: ${NAME}, ${NAME:?message}, ${NAME?m}, ${NAME:-default}, ${NAME-d}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^${}]*))?\}")
JDBC = re.compile(r"^jdbc:postgresql://(?P<host>[^:/?]+):(?P<port>\d+)/(?P<db>[^?]+)(?P<query>\?.*)?$")


def variables(environment: dict) -> set[str]:
    return {m.group(1) for value in environment.values() for m in VARIABLE.finditer(str(value))}


def compose_services() -> tuple[dict, dict]:
    services = COMPOSE["services"]
    return services["registry"], services["registry-db"]


def secrets_of(registry: dict, database: dict) -> dict[str, str]:
    """Every ${NAME:?...} the two services need, each a fresh random password (what the operator exports)."""
    values = [*registry["environment"].values(), *database["environment"].values()]
    for match in (m for value in values for m in VARIABLE.finditer(str(value))):
        assert match.group(2) == ":?", f"{match.group(1)} should be a required secret: {match.group(0)}"
    return {name: secrets.token_urlsafe(18) for name in variables(registry["environment"]) | variables(
        database["environment"])}


def registry_environment(registry: dict, database: dict, environ: dict[str, str], pg_port: int) -> dict[str, str]:
    """The registry container's environment, interpolated; only the database's host:port and the HTTP port local."""
    db_env = {key: interpolate(str(value), environ) for key, value in database["environment"].items()}
    env = {key: interpolate(str(value), environ) for key, value in registry["environment"].items()}
    url = JDBC.match(env["APICURIO_DATASOURCE_URL"])
    assert url, f"APICURIO_DATASOURCE_URL is not a PostgreSQL JDBC URL: {env['APICURIO_DATASOURCE_URL']}"
    assert (url["host"], url["port"]) == ("registry-db", "5432"), url.group(0)  # the service, PostgreSQL's port
    assert url["db"] == db_env["POSTGRES_DB"], (url["db"], db_env)
    assert env["APICURIO_DATASOURCE_USERNAME"] == db_env["POSTGRES_USER"], (env, db_env)
    assert env["APICURIO_DATASOURCE_PASSWORD"] == db_env["POSTGRES_PASSWORD"], "registry and registry-db: two secrets"
    env["APICURIO_DATASOURCE_URL"] = f"jdbc:postgresql://127.0.0.1:{pg_port}/{url['db']}{url['query'] or ''}"
    env["QUARKUS_HTTP_PORT"] = str(REGISTRY_PORT)
    return env


def healthcheck_path(registry: dict) -> str:
    """The path compose's healthcheck probes (curl http://localhost:<QUARKUS_HTTP_PORT>/...)."""
    test = " ".join(registry["healthcheck"]["test"])
    found = re.search(r"http://localhost:(\d+)(/\S*)", test)
    assert found, test
    assert found.group(1) == str(registry["environment"]["QUARKUS_HTTP_PORT"]), test
    return found.group(2)


def create_database(admin_dsn: dict, database: dict, environ: dict[str, str]) -> dict[str, str]:
    """What the postgres image does with POSTGRES_USER/PASSWORD/DB, and password auth for that user over TCP.

    The suite's server trusts every connection; here the registry's user must give its password (scram-sha-256),
    so a registry started without APICURIO_DATASOURCE_PASSWORD, or with another, is refused. The user owns its
    database but is no superuser (stricter than the image, whose POSTGRES_USER is one).
    """
    import psycopg
    from psycopg import sql

    db_env = {key: interpolate(str(value), environ) for key, value in database["environment"].items()}
    user, password, name = db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], db_env["POSTGRES_DB"]
    with psycopg.connect(**admin_dsn, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(user)))
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text("local all all trust\n"
                       f"host all {user} 127.0.0.1/32 scram-sha-256\n"
                       "host all all 127.0.0.1/32 trust\n")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 30
    while True:  # the postmaster rereads pg_hba.conf on the signal: wait (bounded) until it refuses a wrong password
        try:
            psycopg.connect(**{**admin_dsn, "user": user}, dbname=name, password="wrong-" + password).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc), exc
            break
        assert time.monotonic() < deadline, "PostgreSQL still accepts the registry user without its password"
        time.sleep(0.2)
    psycopg.connect(**{**admin_dsn, "user": user}, dbname=name, password=password).close()
    return db_env


def stored(admin_dsn: dict, name: str) -> tuple[dict[str, str], dict[str, set[int]]]:
    """Apicurio's tables in the database (table → owner) and per artifact (subject) the ids of its versions."""
    import psycopg

    with psycopg.connect(**admin_dsn, dbname=name) as conn:
        tables = dict(conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall())
        ids: dict[str, set[int]] = {}
        if "versions" in tables:
            # ccompat subjects live in Apicurio's default group (stored as `__$GROUPID$__`); the database is ours alone
            for artifact, global_id, content_id in conn.execute(
                    "SELECT artifactId, globalId, contentId FROM versions").fetchall():
                ids.setdefault(artifact, set()).update((global_id, content_id))
    return tables, ids


def test_compose_registry_settings_keep_schemas_in_postgresql(tmp_path, monkeypatch):
    java = java_or_unavailable()
    registry_service, db_service = compose_services()
    # The same software as the image: the jar of deploy/registry/pom.xml is the image's version.
    image_version = registry_service["image"].rsplit(":", 1)[1]
    assert f"<apicurio.version>{image_version}</apicurio.version>" in REGISTRY_POM.read_text(), registry_service["image"]
    assert db_service["image"].startswith("postgres:"), db_service["image"]
    assert registry_service["depends_on"]["registry-db"]["condition"] == "service_healthy"
    # The container listens where compose publishes it and probes it.
    published = [str(p).rsplit(":", 1)[1] for p in registry_service["ports"]]
    assert published == [str(registry_service["environment"]["QUARKUS_HTTP_PORT"])], registry_service["ports"]
    probe = healthcheck_path(registry_service)

    environ = secrets_of(registry_service, db_service)
    assert environ, "the registry's database password should be a secret from the environment"
    for name in environ:  # compose stops with the variable's name when a secret is missing
        with pytest.raises(KeyError, match=name):
            registry_environment(registry_service, db_service, {k: v for k, v in environ.items() if k != name}, 1)

    jar = resolve_registry(LocalConfig().cache_dir, echo=lambda line: print(line, file=sys.stderr))
    assert image_version in jar.name, jar
    monkeypatch.setattr(pg, "FIRST_PORT", PG_FIRST_PORT)
    timings: dict[str, float] = {}
    registries: list[Registry] = []
    with pg.postgres_server(tmp_path) as sqlalchemy_url:
        try:
            server = make_url(sqlalchemy_url)
            admin = {"host": server.host, "port": server.port, "user": server.username}
            db_env = create_database(admin, db_service, environ)
            env = registry_environment(registry_service, db_service, environ, server.port)
            catalogue = Catalogue.load()
            subjects = {entity.subject for entity in catalogue.entities.values()}
            url = f"http://127.0.0.1:{REGISTRY_PORT}/apis/ccompat/v7"

            async def publish_all() -> dict[str, int]:
                async with SchemaRegistry(url) as client:
                    return await publish(catalogue, client)

            # 1. First start on the empty database: Apicurio creates its tables, the hub publishes its schemas.
            first = Registry(java, jar, REGISTRY_PORT, tmp_path / "registry-1.log", env=env)
            registries.append(first)
            timings["first start"] = first.start(probe)
            began = time.monotonic()
            ids = asyncio.run(publish_all())
            timings["publish"] = time.monotonic() - began
            assert set(ids) == subjects
            with httpx.Client(base_url=url, headers={"Accept": CCOMPAT}, timeout=10) as client:
                schemas = {s: client.get(f"/schemas/ids/{i}").json()["schema"] for s, i in ids.items()}

            tables, stored_ids = stored(admin, db_env["POSTGRES_DB"])
            # Apicurio's SQL schema (postgresql.ddl), made by the registry's own user: it logged in with the password.
            for table in ("apicurio", "artifacts", "versions", "content", "artifact_rules"):
                assert tables.get(table) == db_env["POSTGRES_USER"], (table, tables)
            assert set(stored_ids) == subjects, stored_ids  # every subject is a row in PostgreSQL ...
            for subject, schema_id in ids.items():  # ... under the id the hub's records carry
                assert schema_id in stored_ids[subject], (subject, schema_id, stored_ids[subject])

            assert first.stop() is not None
            assert first.process.poll() is not None

            # 2. A new JVM on the same database: nothing registered again, yet every subject answers as before.
            second = Registry(java, jar, REGISTRY_PORT, tmp_path / "registry-2.log", env=env)
            registries.append(second)
            timings["restart"] = second.start(probe)
            with httpx.Client(base_url=url, headers={"Accept": CCOMPAT}, timeout=10) as client:
                assert subjects <= set(client.get("/subjects").json())
                for subject, schema_id in ids.items():
                    latest = client.get(f"/subjects/{subject}/versions/latest")
                    assert latest.status_code == 200, (subject, latest.text)
                    assert latest.json()["id"] == schema_id, (subject, latest.json(), schema_id)
                    assert json.loads(latest.json()["schema"]) == json.loads(schemas[subject]), subject
                    by_id = client.get(f"/schemas/ids/{schema_id}")
                    assert by_id.status_code == 200, (subject, schema_id, by_id.text)
                    assert json.loads(by_id.json()["schema"]) == json.loads(schemas[subject]), subject
                    assert client.get(f"/subjects/{subject}/versions").json() == [1], subject
                    assert client.get(f"/config/{subject}").json()["compatibilityLevel"] == COMPATIBILITY

            # Publishing again (the same schemas) finds them: the same ids, no new version.
            assert asyncio.run(publish_all()) == ids
            with httpx.Client(base_url=url, headers={"Accept": CCOMPAT}, timeout=10) as client:
                for subject in subjects:
                    assert client.get(f"/subjects/{subject}/versions").json() == [1], subject
            print(f"\ncompose registry on PostgreSQL: {len(ids)} subjects, ids {sorted(ids.values())}; "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), file=sys.stderr)
        finally:  # the registries before their database
            for registry in registries:
                registry.stop()
