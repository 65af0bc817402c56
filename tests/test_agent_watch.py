"""``watch``: following a real log file across rotation and truncation; ending with the pid."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from sonde.agent.watch import FileTailer, Watch


def bodies(records):
    return [r.body for r in records]


def test_starts_at_the_end_and_follows_appends(tmp_path):
    path = tmp_path / "model.log"
    path.write_text("INFO:old:written before the agent\n")
    got = []
    t = FileTailer(str(path), got.append)
    with open(path, "a") as f:
        f.write("INFO:app:one\nWARNING:app:tw")
        f.flush()
        t.poll_once()
        assert bodies(got) == ["INFO:app:one"]  # the half line waits for its end
        f.write("o\n")
        f.flush()
    t.poll_once()
    assert bodies(got) == ["INFO:app:one", "WARNING:app:two"]
    assert got[1].severity_text == "WARNING"
    t.stop()


def test_from_start_reads_what_is_there():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        f.write("a\nb\n")
    got = []
    t = FileTailer(f.name, got.append, from_start=True)
    t.poll_once()
    t.stop()
    os.unlink(f.name)
    assert bodies(got) == ["a", "b"]


def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(tmp_path):
    path = tmp_path / "model.log"
    path.write_text("")
    got = []
    t = FileTailer(str(path), got.append)
    old = open(path, "a")
    old.write("line 1\nline 2\n")
    old.flush()
    t.poll_once()
    # logrotate's create mode: rename, the writer still has the old file open and
    # writes a little more before reopening; a new file appears at the path
    os.rename(path, tmp_path / "model.log.1")
    old.write("line 3\nlast partial")
    old.flush()
    old.close()
    with open(path, "w") as new:
        new.write("line 4\n")
    t.poll_once()
    assert bodies(got) == ["line 1", "line 2", "line 3", "last partial", "line 4"]
    assert t.rotations == 1
    with open(path, "a") as new:
        new.write("line 5\n")
    t.poll_once()
    assert bodies(got)[-1] == "line 5"
    t.stop()


def test_rotation_with_the_new_file_not_there_yet(tmp_path):
    path = tmp_path / "model.log"
    path.write_text("")
    got = []
    t = FileTailer(str(path), got.append)
    with open(path, "a") as f:
        f.write("before\n")
    os.rename(path, tmp_path / "model.log.1")
    t.poll_once()  # path missing: keep the old file
    assert bodies(got) == ["before"]
    path.write_text("after\n")
    t.poll_once()
    assert bodies(got) == ["before", "after"]
    t.stop()


def test_truncation_reads_from_the_start_again(tmp_path):
    path = tmp_path / "model.log"
    path.write_text("")
    got = []
    t = FileTailer(str(path), got.append)
    with open(path, "a") as f:
        f.write("first long line before copytruncate\n")
    t.poll_once()
    with open(path, "r+") as f:  # copytruncate: same inode, size back to 0, then new writes
        f.truncate(0)
    with open(path, "a") as f:
        f.write("new\n")
    t.poll_once()
    assert bodies(got) == ["first long line before copytruncate", "new"]
    assert t.truncations == 1 and t.rotations == 0
    t.stop()


def test_a_file_that_appears_later(tmp_path):
    path = tmp_path / "later.log"
    got = []
    t = FileTailer(str(path), got.append)
    t.poll_once()
    path.write_text("hello\n")
    t.poll_once()
    assert bodies(got) == ["hello"]
    t.stop()


def test_threaded_tailer_with_a_real_writer_process(tmp_path):
    path = tmp_path / "w.log"
    path.write_text("")
    got = []
    t = FileTailer(str(path), got.append, poll=0.02).start()
    writer = (
        "import logging, logging.handlers, sys, time\n"
        f"h = logging.handlers.RotatingFileHandler({str(path)!r}, maxBytes=400, backupCount=50)\n"
        "h.setFormatter(logging.Formatter('%(levelname)s:%(name)s:%(message)s'))\n"
        "log = logging.getLogger('w'); log.addHandler(h); log.setLevel(logging.INFO)\n"
        "for i in range(200):\n"
        "    log.info('n=%03d', i); time.sleep(0.004)\n"
    )
    subprocess.run([sys.executable, "-c", writer], check=True)
    deadline = time.monotonic() + 5
    while len(got) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    t.stop()
    # RotatingFileHandler renamed the file every 25 lines; every line arrived, in order
    assert bodies(got) == [f"INFO:w:n={i:03d}" for i in range(200)]
    assert t.rotations >= 5


def test_watch_ends_when_the_process_exits(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    w = Watch(child.pid, [], poll=0.05)
    done = threading.Event()

    def reap():  # the test is the parent: reap so the pid does not linger as a zombie
        child.wait()
        done.set()

    threading.Thread(target=reap, daemon=True).start()
    started = time.monotonic()
    assert w.run() == 0
    assert 0.3 < time.monotonic() - started < 5
