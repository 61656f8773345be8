"""The test servers (tests/servers.py) listen on loopback only, PostgreSQL wants its password, and both end
when the process that started them is killed with -9 (as when pytest is)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import hwkd

from servers import alive, children, listening

REPO = Path(hwkd.__file__).resolve().parents[1]
STARTER = """
import json, pathlib, sys, time
import servers
s = servers.start_sshd(pathlib.Path(sys.argv[1]))
p = servers.start_postgres()
print(json.dumps({"sshd": s["proc"].pid, "postgres": p["proc"].pid, "pg_port": p["port"],
                  "password": p["password"], "pg_dir": str(p["dir"])}), flush=True)
time.sleep(600)
"""


def test_servers_listen_on_loopback_only_and_die_with_a_killed_test_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / "sshd")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    pids = {}
    try:
        line = starter.stdout.readline()
        assert line, starter.stderr.read()[-2000:]
        info = json.loads(line)
        pids = {"sshd": info["sshd"], "postgres": info["postgres"]}
        for name, pid in pids.items():
            addrs = listening(pid)
            assert addrs and all(a == "127.0.0.1" for a, _ in addrs), (name, addrs)
        backends = children(pids["postgres"])
        assert backends                                       # the server's own processes (checkpointer, ...)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host="127.0.0.1", port=info["pg_port"], user="hwkd", dbname="postgres", connect_timeout=5)
        with psycopg.connect(host="127.0.0.1", port=info["pg_port"], user="hwkd", password=info["password"],
                             dbname="postgres", connect_timeout=5) as c:
            assert c.execute("select 1").fetchone() == (1,)
        # the URL form hwkd search --storage takes (Optuna's RDB storage over SQLAlchemy + psycopg)
        import optuna
        url = f"postgresql+psycopg://hwkd:{info['password']}@127.0.0.1:{info['pg_port']}/postgres"
        optuna.create_study(study_name="s", storage=url)
        assert optuna.load_study(study_name="s", storage=url).study_name == "s"
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        left = [pid for pid in [*pids.values(), *backends]]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in left):
            time.sleep(0.1)
        assert not [p for p in left if alive(p)], "a test server outlived the killed test process"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if "info" in locals():
            subprocess.run(["rm", "-rf", info["pg_dir"]])
