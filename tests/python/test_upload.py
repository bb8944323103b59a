"""``client.upload_file``: modules and archives for every current and future worker."""

import zipfile

import pytest

import rusk


def call(module, attr, *args):
    import importlib

    return getattr(importlib.import_module(module), attr)(*args)


@pytest.mark.parametrize("fresh_client", [dict(n_workers=2)], indirect=True)
def test_upload_reaches_every_worker_now_and_after_restart(fresh_client, tmp_path):
    c = fresh_client
    mod = tmp_path / "rusk_uploaded_mod.py"
    mod.write_text("def answer(x):\n    return x * 2\n")
    msg = c.upload_file(str(mod))
    assert "2 worker" in msg
    got = c.run(call, "rusk_uploaded_mod", "answer", 21)
    assert sorted(got) == sorted(c.nthreads()) and set(got.values()) == {42}
    # Uploaded again: reloaded where it was imported.
    mod.write_text("def answer(x):\n    return x * 3\n")
    c.upload_file(str(mod))
    assert set(c.run(call, "rusk_uploaded_mod", "answer", 1).values()) == {3}
    # An archive, and workers restarted later still have both.
    archive = tmp_path / "rusk_pkg_bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("rusk_zipped_pkg/__init__.py", "NAME = 'zipped'\n")
    c.upload_file(str(archive))
    c.restart(timeout=60)
    assert set(c.run(call, "rusk_uploaded_mod", "answer", 2).values()) == {6}
    assert c.submit(call, "rusk_zipped_pkg", "__str__").result(30)  # importable
    assert c.submit(lambda: __import__("rusk_zipped_pkg").NAME).result(30) == "zipped"


def test_bad_uploads_raise_and_leave_the_cluster_working(client, tmp_path):
    bad = tmp_path / "rusk_broken_mod.py"
    bad.write_text("def broken(:\n")
    with pytest.raises(SyntaxError):
        client.upload_file(str(bad))
    failing = tmp_path / "rusk_failing_import.py"
    failing.write_text("raise ImportError('this module refuses to load')\n")
    with pytest.raises(ImportError, match="refuses to load"):
        client.upload_file(str(failing))
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    with pytest.raises(RuntimeError, match="extensions"):
        client.upload_file(str(other))
    assert client.submit(sum, [1, 2]).result(30) == 3


def test_run_calls_every_worker_once_and_reports_errors(client):
    import os

    pids = client.run(os.getpid)
    assert sorted(pids) == sorted(client.nthreads()) and len(set(pids.values())) == len(pids)
    one = sorted(pids)[0]
    assert list(client.run(os.getpid, workers=[one])) == [one]
    with pytest.raises(ZeroDivisionError):
        client.run(lambda: 1 / 0)
    errors = client.run(lambda: 1 / 0, on_error="return")
    assert all(isinstance(e, ZeroDivisionError) for e in errors.values())
    assert client.run(lambda: 1 / 0, on_error="ignore") == {}
    with pytest.raises(ValueError, match="no live worker"):
        client.run(os.getpid, workers=["nobody/0"])
    assert rusk.Client.run.__doc__


def test_worker_logs_are_served_by_each_worker(client):
    logs = client.get_worker_logs()
    assert sorted(logs) == sorted(client.nthreads())
    for name, lines in logs.items():
        assert lines and all(level in ("ERROR", "WARN", "INFO", "DEBUG", "TRACE") for level, _ in lines)
        assert any("worker started" in line for _, line in lines), lines[:5]
        assert all("\x1b" not in line for _, line in lines)
    one = sorted(logs)[0]
    assert list(client.get_worker_logs(n=1, workers=[one])) == [one]
    assert len(client.get_worker_logs(n=1, workers=one)[one]) == 1
    with pytest.raises(ValueError, match="no live worker"):
        client.get_worker_logs(workers=["nobody/0"])
