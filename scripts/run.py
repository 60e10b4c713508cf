"""`make run`: a collector on 127.0.0.1:9847 and an agent for this machine, stopped together on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

LISTEN = os.environ.get("VDIWATCH_LISTEN", "127.0.0.1:9847")
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
    collector = subprocess.Popen([py, "-m", "collector", "--listen", LISTEN])
    if not wait_healthy(collector):
        print(f"the collector did not start on {LISTEN} (is the port taken?)", file=sys.stderr)
        collector.terminate()
        return 1
    agent = subprocess.Popen([py, "-m", "agent", "--collector", BASE])
    print(f"""
vdiwatch is running:
  collector   {BASE}/
  metrics     {BASE}/metrics
  health      {BASE}/healthz
  agent       reporting this machine every 15 s
Press Ctrl-C to stop both.
""", flush=True)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and collector.poll() is None and agent.poll() is None:
        time.sleep(0.2)
    # The agent first, so that its goodbye reaches the collector.
    for proc in (agent, collector):
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
