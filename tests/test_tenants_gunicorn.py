"""Tenants under a real ``gunicorn -w 4`` (API.md 8.2): concurrent writes to two
tenants through every worker land each in its own tenant, with ids per tenant
handed out once each, and every worker reads them back."""

from __future__ import annotations

import threading

import pytest

from tests.gunicorn_server import Server

PREFIX = "/genesys/1/cs"


@pytest.mark.file_engine("tenants given as data files")
def test_concurrent_writes_to_two_tenants_stay_apart(tmp_path):
    ini = tmp_path / "tenants.ini"
    ini.write_text(f"[tenants]\nacme = {tmp_path / 'acme.json'}\n"
                   f"globex = {tmp_path / 'globex.json'}\nglobex.id = 7\ndefault = acme\n")
    server = Server(str(tmp_path / "unused.json"), workers=4,
                    extra_env={"CONTEXTSVC_CONFIG": str(ini)})
    started: dict[str, list[int]] = {"acme": [], "globex": []}
    failures = []

    def write(tenant: str, thread: int) -> None:
        for n in range(20):
            status, body, _ = server.request(
                "POST", f"{PREFIX}/services/start",
                {"customer_id": "C", "contact_key": "K", "tenant": tenant, "n": n},
                headers={"ContactCenterId": tenant if thread % 2 else
                         {"acme": "acme", "globex": "7"}[tenant]})
            if status != 201:
                failures.append((tenant, status, body))
            else:
                started[tenant].append(body["service_id"])

    try:
        threads = [threading.Thread(target=write, args=(tenant, t))
                   for tenant in ("acme", "globex") for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        for tenant in ("acme", "globex"):
            assert sorted(started[tenant]) == list(range(1, 81))  # per tenant, once each
            for _ in range(8):  # whichever worker answers
                status, services, _ = server.request(
                    "GET", f"{PREFIX}/customers/C/services", headers={"ContactCenterId": tenant})
                assert status == 200 and len(services) == 80
                assert {s["tenant"] for s in services} == {tenant}
    finally:
        server.stop()
    assert (tmp_path / "acme.json").exists() and (tmp_path / "globex.json").exists()
    assert not (tmp_path / "unused.json").exists()
