"""The supervisor with real child processes: capture, crash, backoff, restarts, readiness, stop."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time

from sonde.agent.core import READY, STARTING, ReplicaState
from sonde.agent.model import Counter
from sonde.agent.supervisor import MAX_LINE, Supervisor

from live_server import free_port

CHILD = textwrap.dedent('''
    import http.server, json, logging, os, sys, time
    runs_file, port = sys.argv[1], int(sys.argv[2])
    with open(runs_file, "a") as f:
        f.write(f"{time.time()}\\n")
    run = sum(1 for _ in open(runs_file)) - 1
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s:%(name)s:%(message)s")  # stderr
    log = logging.getLogger("model")
    print(f"run {run}: loading")
    log.debug("run %d: debug detail", run)
    log.info("run %d: weights loaded request_id=req-%d", run, run)
    print(json.dumps({"level": "warning", "message": f"run {run}: json line", "component": "batcher"}))
    log.warning("run %d: slow", run)
    if run < 3:
        log.error("run %d: CUDA error, exiting", run)
        sys.exit(3)
    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ready" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    time.sleep(0.5)  # still loading: the ready URL refuses connections meanwhile
    server = http.server.HTTPServer(("127.0.0.1", port), Ready)
    with open(runs_file + ".listening", "w") as f:
        f.write(str(time.time()))
    print(f"run {run}: serving", flush=True)
    server.serve_forever()
''')


def expected_lines(run: int) -> tuple[list[str], list[str]]:
    stdout = [f"run {run}: loading",
              json.dumps({"level": "warning", "message": f"run {run}: json line", "component": "batcher"})]
    stderr = [f"DEBUG:model:run {run}: debug detail", f"INFO:model:run {run}: weights loaded request_id=req-{run}",
              f"WARNING:model:run {run}: slow"]
    if run < 3:
        stderr.append(f"ERROR:model:run {run}: CUDA error, exiting")
    else:
        stdout.append(f"run {run}: serving")
    return stdout, stderr


def test_crash_restart_backoff_capture_and_readiness(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    runs = tmp_path / "runs"
    port = free_port()
    records, events, transitions = [], [], []
    state = ReplicaState(on_change=lambda v: transitions.append((v, time.time())))
    restarts = Counter()
    sup = Supervisor(
        [sys.executable, str(script), str(runs), str(port)], on_log=records.append,
        on_event=lambda msg, sev: events.append((sev, msg)), state=state, restarts=restarts,
        ready_url=f"http://127.0.0.1:{port}/ready", ready_poll=0.05,
        backoff_initial=0.2, backoff_max=0.4, echo=False,
    )
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", sup.run()))
    t.start()
    deadline = time.monotonic() + 20
    while state.value != READY and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.value == READY
    sup.stop()
    t.join(10)
    assert result["code"] == 0  # stopped on request

    # three crashes, three restarts, delays 0.2, 0.4, 0.4 (doubling, capped)
    assert restarts.value == 3
    assert sup.exit_codes[:3] == [3, 3, 3] and sup.exit_codes[3] == -15
    starts = [float(x) for x in runs.read_text().split()]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.4
    assert gaps[1] < 2.0 and gaps[2] < 2.0  # capped at 0.4 (plus interpreter start), not 0.8
    assert [sev for sev, _ in events] == ["ERROR", "ERROR", "ERROR"]
    assert "exited with code 3" in events[0][1] and "restart #1 in 0.2 s" in events[0][1]
    assert "restart #3 in 0.4 s" in events[2][1]

    # every line, in order within each stream, with its stream, level and ids
    for stream, idx in (("stdout", 0), ("stderr", 1)):
        got = [r.body for r in records if r.attrs["log.iostream"] == stream]
        assert got == [line for run in range(4) for line in expected_lines(run)[idx]]
    by_body = {r.body: r for r in records}
    assert by_body["INFO:model:run 2: weights loaded request_id=req-2"].attrs["request_id"] == "req-2"
    assert by_body["ERROR:model:run 0: CUDA error, exiting"].severity_text == "ERROR"
    assert by_body["DEBUG:model:run 1: debug detail"].severity_number == 5
    json_rec = by_body[expected_lines(3)[0][1]]
    assert (json_rec.severity_text, json_rec.attrs["component"]) == ("WARNING", "batcher")
    assert by_body["run 3: serving"].severity_number == 0
    stamps = [r.ts_ns for r in records if r.attrs["log.iostream"] == "stderr"]
    assert stamps == sorted(stamps)

    # ready only once the child's server answered, and only in the last run
    # starting while crashing and restarting (no change to report), ready once it answered,
    # still ready for the last sample after the stop
    assert [v for v, _ in transitions] == [READY]
    listening = float((tmp_path / "runs.listening").read_text())
    assert transitions[0][1] >= listening


def test_ready_at_once_without_a_ready_url_and_clean_exit_ends_it(tmp_path):
    state = ReplicaState()
    seen = []
    state._on_change = seen.append
    records = []
    sup = Supervisor([sys.executable, "-c", "print('done')"], on_log=records.append, state=state,
                     restarts=Counter(), echo=False)
    assert sup.run() == 0
    assert seen == [READY] and [r.body for r in records] == ["done"]
    assert sup.restarts.value == 0 and sup.exit_codes == [0]


def test_restart_never_returns_the_crash_status(tmp_path):
    sup = Supervisor([sys.executable, "-c", "import os; os._exit(7)"], on_log=lambda r: None, state=ReplicaState(),
                     restarts=Counter(), restart="never", echo=False)
    assert sup.run() == 7 and sup.restarts.value == 0


def test_restart_always_restarts_a_clean_exit(tmp_path):
    marker = tmp_path / "n"
    code = f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); n = len(p.read_text()) if p.exists() else 0; " \
           "p.write_text('x' * (n + 1)); sys.exit(0 if n < 2 else 5)"
    sup = Supervisor([sys.executable, "-c", code], on_log=lambda r: None, state=ReplicaState(), restarts=Counter(),
                     restart="on-failure", backoff_initial=0.01, echo=False)
    assert sup.run() == 0 and sup.restarts.value == 0  # on-failure: the clean exit ends it
    marker.unlink()
    sup = Supervisor([sys.executable, "-c", code], on_log=lambda r: None, state=ReplicaState(), restarts=Counter(),
                     restart="always", backoff_initial=0.01, echo=False)
    t = threading.Thread(target=sup.run)
    t.start()
    deadline = time.monotonic() + 10
    while sup.restarts.value < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # runs 0 and 1 exit 0, run 2 exits 5: restarted after each, whatever the status
    while len(sup.exit_codes) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sup.stop()
    t.join(10)
    assert sup.exit_codes[:3] == [0, 0, 5] and sup.restarts.value >= 2


def test_stop_kills_the_whole_group_when_sigterm_is_ignored(tmp_path):
    pids = tmp_path / "pids"
    code = textwrap.dedent(f'''
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        worker = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(pids)!r}, "w").write(str(worker.pid))
        print("up", flush=True)
        time.sleep(60)
    ''')
    records = []
    sup = Supervisor([sys.executable, "-c", code], on_log=records.append, state=ReplicaState(), restarts=Counter(),
                     stop_timeout=0.5, echo=False)
    t = threading.Thread(target=sup.run)
    t.start()
    deadline = time.monotonic() + 10
    while not records and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    sup.stop()
    t.join(10)
    assert not t.is_alive() and sup.exit_codes == [-9]
    assert 0.4 <= time.monotonic() - started < 5
    worker = int(pids.read_text())
    deadline = time.monotonic() + 5
    import psutil
    while time.monotonic() < deadline:  # the worker (same process group) got the SIGKILL too
        try:
            if psutil.Process(worker).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("worker survived the stop")


def test_long_lines_are_cut_and_a_last_line_without_newline_is_kept():
    records = []
    code = f"import sys; sys.stdout.write('a' * {MAX_LINE + 10} + '\\n' + 'tail without newline')"
    sup = Supervisor([sys.executable, "-c", code], on_log=records.append, state=ReplicaState(), restarts=Counter(),
                     echo=False)
    assert sup.run() == 0
    assert [len(r.body) for r in records] == [MAX_LINE, 10, len("tail without newline")]
    assert records[-1].body == "tail without newline"


def test_a_command_that_does_not_exist():
    events = []
    sup = Supervisor(["/nonexistent/model-server"], on_log=lambda r: None, on_event=lambda m, s: events.append(s),
                     state=ReplicaState(), restarts=Counter(), echo=False)
    assert sup.run() == 127 and events == ["ERROR"]


def test_a_crash_after_ready_goes_back_to_starting_until_ready_again(tmp_path):
    marker = tmp_path / "crashed"
    code = (f"import pathlib, sys, time; p = pathlib.Path({str(marker)!r})\n"
            "if not p.exists():\n    p.write_text('1'); time.sleep(0.3); sys.exit(1)\n"
            "print('up', flush=True); time.sleep(30)")
    seen = []
    state = ReplicaState(on_change=seen.append)
    records = []
    sup = Supervisor([sys.executable, "-c", code], on_log=records.append, state=state, restarts=Counter(),
                     backoff_initial=0.3, echo=False)
    t = threading.Thread(target=sup.run)
    t.start()
    deadline = time.monotonic() + 10
    while not any(r.body == "up" for r in records) and time.monotonic() < deadline:
        time.sleep(0.02)
    sup.stop()
    t.join(10)
    assert seen == [READY, STARTING, READY] and sup.restarts.value == 1
