"""Backing up and checking the data file of the file engine without opening a
store on it (``backup_store``, ``check_store``: what ``contextsvc backup`` and
``check`` do), while another process writes and compacts."""

from contextsvc.config import load
from contextsvc.storage import backup_store, check_store, open_store


def settings(path):
    return load({"storage": {"path": str(path)}}, environ={})


def service(sid, **extra):
    return {"service_id": sid, "customer_id": "C", "started": {
        "timestamp": "2026-01-01T00:00:00.000Z"}, "data": {}, "states": [], "tasks": [],
        **extra}


def test_a_backup_holds_the_file_as_it_was_whatever_happens_while_it_copies(tmp_path):
    path = tmp_path / "db.json"
    store = open_store(settings(path))  # as a server's worker
    try:
        store.create_services([lambda sid: service(sid, pad="p" * 3000)] * 1000)  # 3 MB
        store.delete_service(1000)
        expected = list(store.scan())
        calls = []

        def meanwhile(done, total):
            calls.append(done < total)
            if len(calls) == 1:  # the rest of the file is still to be copied
                for sid in range(1, 1000, 2):
                    store.delete_service(sid)
                store.update_service(2, lambda doc: doc.update(pad="changed"))
                assert store.compact()
                store.create_service(lambda sid: service(sid))

        copied = backup_store(settings(path), str(tmp_path / "copy.json"), progress=meanwhile)
        assert calls[0] is True and copied.services == 999
        assert check_store(settings(path), str(tmp_path / "copy.json"))[0] == copied
        copy = open_store(settings(tmp_path / "copy.json"))
        try:
            assert list(copy.scan()) == expected
            assert copy.create_service(lambda sid: service(sid))["service_id"] == 1001
        finally:
            copy.close()
        assert store.count() == 500 and store.get_service(2)["pad"] == "changed"
    finally:
        store.close()
