"""A service counts as running until every thread of its process has exited (stack.processes)."""

import subprocess
import sys
import textwrap
from pathlib import Path

from streamtrain.stack.processes import Service, port_open, stop
from tests.waiting import eventually

# The main thread leaves with the thread-only exit syscall while another thread keeps the listening
# socket: the state a JVM is in for a moment after SIGKILL (leader a zombie, its threads still exiting).
LEADER_LEAVES_FIRST = textwrap.dedent(
    """
    import ctypes, socket, threading, time
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    print(s.getsockname()[1], flush=True)
    threading.Thread(target=lambda: time.sleep(600)).start()
    time.sleep(0.2)
    ctypes.CDLL(None).syscall(60, 0)  # SYS_exit (x86-64): this thread only, not the group
    """
)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_zombie_leader_whose_threads_still_run_is_still_running(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER_LEAVES_FIRST], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        port = int(proc.stdout.readline())
        svc = Service("leader-leaves-first", port, tmp_path)
        svc.pid_file.parent.mkdir(parents=True)
        svc.pid_file.write_text(str(proc.pid))
        eventually(lambda: _state(proc.pid) == "Z", "the main thread to leave", timeout=10, every=0.05)
        assert svc.pid() == proc.pid
        assert port_open(port)
        stop(svc, timeout=5, kill=True)
        assert svc.pid() is None
        assert not port_open(port)
    finally:
        proc.kill()
        proc.wait()
