import subprocess

import pytest

from contextsvc import create_app
from tests import pgcluster

BASES = ["/genesys/1/cs", ""]
TEST_ENGINE = pgcluster.TEST_ENGINE


@pytest.fixture(params=["postgresql"] if TEST_ENGINE == "postgresql" else ["file", "memory"])
def app(request, tmp_path):
    """The app on a fresh store; every API test runs on the file and memory engines
    (or on postgresql, see TEST_ENGINE)."""
    return create_app({"storage": {"engine": request.param,
                                   "path": str(tmp_path / "data" / "contextsvc.json")}})


@pytest.fixture(autouse=True)
def test_engine(request, monkeypatch):
    """With TEST_ENGINE postgresql, a fresh schema of the test cluster for the test;
    the tests about the file engine's data file (marked file_engine) are skipped."""
    if TEST_ENGINE != "postgresql":
        return
    marker = request.node.get_closest_marker("file_engine")
    if marker is not None:
        pytest.skip(f"file engine only: {marker.args[0] if marker.args else 'the data file'}")
    cluster = request.getfixturevalue("pg_cluster")
    monkeypatch.setenv("CONTEXTSVC_STORAGE_ENGINE", "postgresql")
    monkeypatch.setenv("CONTEXTSVC_STORAGE_DSN", cluster.dsn)
    monkeypatch.setenv("CONTEXTSVC_STORAGE_SCHEMA", pgcluster.fresh_schema())


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(params=BASES, ids=["8.5", "8.1"])
def base(request):
    return request.param


class Api:
    """Small helpers over the test client: they assert the success status."""

    def __init__(self, client, base="/genesys/1/cs"):
        self.client, self.base = client, base

    def start_service(self, **body):
        body.setdefault("contact_key", "408-832-7799")
        r = self.client.post(f"{self.base}/services/start", json=body)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["service_id"]

    def start_state(self, sid, **body):
        r = self.client.post(f"{self.base}/services/{sid}/states/start", json=body)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["state_id"]

    def start_task(self, sid, **body):
        r = self.client.post(f"{self.base}/services/{sid}/tasks/start", json=body)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["task_id"]

    def get(self, path, **params):
        r = self.client.get(self.base + path, query_string=params)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def end(self, path, **body):
        r = self.client.post(self.base + path, json=body)
        assert r.status_code == 204, r.get_json()


@pytest.fixture
def api(client):
    return Api(client)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB file system of its own (tmpfs; mounting needs root), to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the whole run (see tests/pgcluster.py);
    the tests that use it are skipped, saying why, when it cannot be started here."""
    why = pgcluster.missing()
    if why is not None:
        pytest.skip(why)
    cluster = pgcluster.Cluster()
    yield cluster
    cluster.close()
