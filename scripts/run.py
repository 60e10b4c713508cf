"""`make run`: a collector on 127.0.0.1:9847, an agent for this machine and a simulated farm; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

LISTEN = os.environ.get("VDIWATCH_LISTEN", "127.0.0.1:9847")
SIM_HOSTS = int(os.environ.get("SIM_HOSTS", "200"))  # a simulated farm beside this machine; 0: none
BASE = f"http://{LISTEN}"


def wait_healthy(proc: subprocess.Popen, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{BASE}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    py = sys.executable
    # Children get sessions of their own: Ctrl-C reaches only this script, which stops
    # the agents first (their goodbyes must reach the collector) and the collector last.
    collector = subprocess.Popen([py, "-m", "collector", "--listen", LISTEN], start_new_session=True)
    if not wait_healthy(collector):
        print(f"the collector did not start on {LISTEN} (is the port taken?)", file=sys.stderr)
        collector.terminate()
        return 1
    agent = subprocess.Popen([py, "-m", "agent", "--collector", BASE], start_new_session=True)
    children = [agent]
    farm = "no simulated farm (SIM_HOSTS=0)"
    if SIM_HOSTS > 0:
        # The farm's clock starts at 09:30 today, so a demo shows a working day at any hour.
        children.append(subprocess.Popen([py, "-m", "agent.sim", "--hosts", str(SIM_HOSTS), "--collector", BASE,
                                          "--start-hour", "9.5", "--log-level", "warning"], start_new_session=True))
        farm = f"{SIM_HOSTS} simulated hosts in 6 delivery groups (SIM_HOSTS=0 turns them off)"
    print(f"""
vdiwatch is running:
  status page {BASE}/
  metrics     {BASE}/metrics
  hosts API   {BASE}/api/v1/hosts
  agent       reporting this machine every 15 s
  simulator   {farm}
Press Ctrl-C to stop.
""", flush=True)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and collector.poll() is None and all(c.poll() is None for c in children):
        time.sleep(0.2)
    # Agents first, so that their goodbyes reach the collector.
    for proc in (*children, collector):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
