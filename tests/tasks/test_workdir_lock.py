import json
import os

import pytest

from recsys_jax.tasks.run_identity import WorkdirError
from recsys_jax.tasks.workdir_lock import WorkdirLock, WorkdirLocked, lock_path


def test_lock_is_exclusive_and_released(tmp_path):
    first = WorkdirLock(tmp_path).acquire()
    holder = json.loads(lock_path(tmp_path).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
    with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()}"):
        WorkdirLock(tmp_path).acquire()
    first.release()
    first.release()  # Idempotent.
    assert not first.held
    with WorkdirLock(tmp_path) as second:
        assert second.held
    assert lock_path(tmp_path).exists()  # The file stays; only the lock goes.


def test_each_process_index_has_its_own_lock(tmp_path):
    with WorkdirLock(tmp_path, 0), WorkdirLock(tmp_path, 1):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lock.0", "lock.1"]
        with pytest.raises(WorkdirLocked):
            WorkdirLock(tmp_path, 1).acquire()


def test_a_locked_workdir_is_a_workdir_error(tmp_path):
    assert issubclass(WorkdirLocked, WorkdirError)
    with WorkdirLock(tmp_path):
        (tmp_path / "lock.0").write_text("garbage")  # An unreadable holder is still named.
        with pytest.raises(WorkdirLocked, match="holder unknown"):
            WorkdirLock(tmp_path).acquire()
