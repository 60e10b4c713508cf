"""Agent footprint on a busy host, beside node_exporter's, in one run.

    python -m benchmarks.agent_bench                      # 2,000 extra processes, 30 collections
    python -m benchmarks.agent_bench --processes 200 --collections 5   # smoke size

Spawns idle processes so the host has about `--processes` of them, then
measures in separate child processes, so that nothing else counts:
- the agent: CPU time per collection (all collectors, the report built and
  encoded as for a push) and peak resident memory, with every collector on,
  sessions and per-user process accounting included;
- node_exporter (Debian's `prometheus-node-exporter`, default collectors): CPU
  time per scrape of its /metrics, the same number of times.
The agent's average load at a 15 s interval is CPU per collection / 15 s.

    python -m benchmarks.agent_bench --in-sessions        # every process in a user session

    python -m benchmarks.agent_bench --logon-events 200   # and 200 new logon events an interval

`--logon-events N` adds the Windows logons collector, fed each interval N new
events of complete logons (profile, LocalSessionManager, group policy and
Security events, from the documented fixtures in tests/fixtures/logons with new
record ids, times and sessions), rendered as the agent renders them
(`--logon-render values`, EvtRenderEventValues) or as XML (`xml`). Measured:
decoding, matching and counting, not EvtRender itself (Windows' own code).

The spawned processes are the benchmark user's, outside any session: they
count as system processes, so per-user and per-application accounting see
none of them. `--in-sessions` places every process in one of the simulated
sessions, as on a busy RDS host, so that that accounting is measured too.

    python -m benchmarks.agent_bench --in-sessions --experience --rounds 3

measures the experience counters side by side: each round runs the agent
without and then with the experience collector, reading a fake PDH (pywin32's
win32pdh calls, answering every counter for each of the sessions: input delay,
ICA Session for three sessions in four, RemoteFX Network for the rest) through
the real thin layer, so that what is measured is the query's Python side,
instance-to-session mapping and the histograms; PDH's own time on Windows is
not in it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil

ROOT = Path(__file__).resolve().parent.parent


class ManySessions:
    """A session source with `n` sessions (a busy RDS host), some changing every snapshot.

    The OS's own session list cannot be filled with 100 logons here; the cost
    measured is everything after the OS call: mapping, lifecycle tracking,
    pseudonyms, process attribution and the report.
    """

    name = "simulated"

    def __init__(self, n: int):
        self.n = n
        self.round = 0

    def snapshot(self):
        from agent.sessions.model import Session

        self.round += 1
        now = time.time()
        out = []
        for i in range(self.n):
            state = "disconnected" if (i + self.round) % 10 == 0 else "active"
            gone = now - 60 if state == "disconnected" else None
            out.append(Session(id=str(i + 2), state=state, protocol="ica" if i % 4 else "rdp",
                               user=f"CITY\\user{i:03d}", logon_time=now - 3600 - i,
                               idle_seconds=float(i * 30), disconnect_time=gone))
        return out


class BenchEventLog:
    """A Windows event log with `per_interval` new events each interval, in every channel the collector reads.

    Each interval's events are made when it starts (`next_interval`, timed apart by the caller) and dropped
    after it: the agent holds no more than one interval's events either.
    """

    def __init__(self, per_interval: int, render: str):
        from agent.logons.events import event_from_values, parse_event
        from tests.agent.logons.fixtures import event_xmls

        self.one = event_xmls("server_vda.xml")[:6]  # alice's logon: profile 1, 2, 21, 4001, 8001, 22
        self.one += event_xmls("server_vda_sessions.xml")[:3]  # UMFD, DWM and the user's 4624
        self.per_interval = per_interval
        self.render = render
        self.pending: Dict[str, List[Any]] = {}
        self.round = -1
        self.record = 1000
        self.decode = event_from_values if render == "values" else parse_event

    def next_interval(self) -> None:
        from tests.agent.logons.fixtures import rendered_values

        self.round += 1
        batch: Dict[str, List[Any]] = {}
        for k in range(self.per_interval // len(self.one)):
            base = 1764576000.0 + self.round * 15 + k * 0.5
            session = 100 + self.round * 50 + k
            for xml in self.one:
                self.record += 1
                xml = (xml.replace("<ns0:SessionID>3<", f"<ns0:SessionID>{session}<")
                       .replace('"Session">3<', f'"Session">{session}<')
                       .replace("2025-12-01T08:00:", "2025-12-01T%s:" % _clock(base))
                       .replace("2025-12-01T09:00:", "2025-12-01T%s:" % _clock(base))
                       .replace("6B2A1C4E-0001", f"6B2A{session % 65536:04X}-0001"))
                xml = _with_record(xml, self.record)
                channel = xml.split("<ns0:Channel>", 1)[1].split("<", 1)[0]
                batch.setdefault(channel, []).append(rendered_values(xml) if self.render == "values" else xml)
        self.pending = batch

    def newest(self, channel: str, query: str) -> Optional[str]:
        return "0"

    def read(self, channel: str, query: str, bookmark: Optional[str], limit: int):
        items = self.pending.get(channel, [])
        return items[:limit], str(self.round), max(0, len(items) - limit)


def _clock(seconds: float) -> str:
    t = int(seconds) % 86400
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}"


def _with_record(xml: str, record: int) -> str:
    head, _, tail = xml.partition("<ns0:EventRecordID>")
    return head + f"<ns0:EventRecordID>{record}" + tail[tail.index("<"):]


class FakePdh:
    """win32pdh's calls, answering every experience counter for `n` sessions with values that change."""

    PDH_FMT_DOUBLE = 0x200

    def __init__(self, n: int):
        from agent.experience import counters as k

        self.n = n
        self.round = 0
        ica = [i for i in range(n) if i % 4]
        rdp = [i for i in range(n) if not i % 4]
        self.instances = {k.INPUT_DELAY: [str(i + 2) for i in range(n)] + ["Max", "Average"]}
        for path in (k.ICA_LATENCY_LAST, k.ICA_LATENCY_AVERAGE, k.ICA_INPUT_BANDWIDTH, k.ICA_OUTPUT_BANDWIDTH):
            self.instances[path] = [f"ICA-CGP#{i} (user{i:03d})" for i in ica]
        for path in (k.RDP_TCP_RTT, k.RDP_UDP_RTT, k.RDP_RECEIVED, k.RDP_SENT):
            self.instances[path] = [f"RDP-Tcp {i}" for i in rdp]

    def OpenQuery(self, _source, _user_data):  # noqa: N802 - pywin32's names
        return 1

    def AddEnglishCounter(self, _query, path, _user_data):  # noqa: N802
        return path

    def CollectQueryData(self, _query):  # noqa: N802
        self.round += 1

    def GetFormattedCounterArray(self, path, _fmt):  # noqa: N802
        r = self.round
        return {name: float((j * 37 + r * 11) % 400 + r * 1000 * ("Bytes" in path)) for j, name in
                enumerate(self.instances[path])}

    def CloseQuery(self, _query):  # noqa: N802
        pass


def experience_collector(sessions: int):
    """The experience collector on FakePdh, its sessions named as ManySessions' would be on a VDA."""
    from agent.collectors.experience import ExperienceCollector
    from agent.experience.pdh import Win32Pdh

    names = {(f"ica-cgp#{i}" if i % 4 else f"rdp-tcp#{i}"): i + 2 for i in range(sessions)}
    return ExperienceCollector(Win32Pdh(FakePdh(sessions)), lambda: names)


def child(collections: int, per_user_top: int, sessions: int, in_sessions: bool = False,
          logon_events: int = 0, logon_render: str = "values", experience: bool = False) -> Dict[str, float]:
    """Run inside a fresh interpreter: build the real agent and collect `collections` times."""
    import dataclasses
    import threading

    from agent.config import AgentConfig
    from agent.push import encode
    from agent.wiring import build_agent
    from contract.report import report_to_doc

    config = AgentConfig()
    config = dataclasses.replace(config, sessions=dataclasses.replace(
        config.sessions, per_user_top=per_user_top, pseudonym_secret="bench"))
    start = time.process_time()
    agent = build_agent(config, "bench-host", threading.Event())
    if sessions:
        for collector in agent.runner.collectors:
            if collector.name == "sessions":
                collector.source = ManySessions(sessions)
                if in_sessions and collector.grouper is not None:
                    from agent.sessions.processes import Place

                    collector.grouper.windows = True  # placed by session id, as on Windows
                    collector.grouper.locate = lambda pid: Place(session=str(2 + pid % sessions))
    log = None
    if logon_events:
        import tempfile

        from agent.collectors.logons import LogonsCollector
        from agent.logons.eventlog import BookmarkStore

        log = BenchEventLog(logon_events, logon_render)
        folder = tempfile.mkdtemp(prefix="vdiwatch-bench-")
        logons = LogonsCollector(log, BookmarkStore(os.path.join(folder, "b.json")),
                                 clock=lambda: 1764576000.0 + 86400)
        agent.runner.collectors.append(logons)
        real_collect = logons.collect

        def timed():  # the collector's own CPU: the whole collection's varies more than it costs
            t = time.process_time()
            try:
                return real_collect()
            finally:
                logon_cpu[0] += time.process_time() - t

        logons.collect = timed  # type: ignore[method-assign]
    logon_cpu = [0.0]
    if log:
        log.next_interval()
    if experience:
        agent.runner.collectors.append(experience_collector(sessions or 100))
    agent.report()  # the first collection primes per-process state: counted apart
    logon_cpu[0] = 0.0
    primed = time.process_time()
    making = 0.0  # making the benchmark's own events: not the agent's
    for _ in range(collections):
        if log:
            t = time.process_time()
            log.next_interval()
            making += time.process_time() - t
        encode(report_to_doc(agent.report()))
    done = time.process_time() - making
    report = agent.report()
    return {
        "startup_cpu_s": primed - start,
        "cpu_per_collection_s": (done - primed) / collections,
        "logons_cpu_per_collection_s": logon_cpu[0] / collections,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "processes_seen": report.system.processes if report.system else 0,
        "sessions_seen": report.sessions.total if report.sessions else 0,
        "user_processes_seen": (report.sessions.user_processes.processes
                                if report.sessions and report.sessions.user_processes else 0),
        "apps_reported": len(getattr(report.sessions, "apps", None) or ()),  # getattr: also runs on older trees
        "logons_counted": report.logons.duration_count if getattr(report, "logons", None) else 0,
        "collectors": sorted(c.name for c in report.collectors),
        "input_delay_observations": (report.experience.input_delay.count
                                     if getattr(report, "experience", None) and report.experience.input_delay else 0),
    }


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_exporter(binary: str, scrapes: int) -> Dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        p = psutil.Process(proc.pid)
        before = sum(p.cpu_times()[:2])
        for _ in range(scrapes):
            urllib.request.urlopen(url, timeout=30).read()
        after = sum(p.cpu_times()[:2])
        return {"cpu_per_scrape_s": (after - before) / scrapes, "rss_bytes": p.memory_info().rss}
    finally:
        proc.terminate()
        proc.wait(10)


def spawn(n: int) -> List[subprocess.Popen]:
    """Idle processes until the host has about `n` more than before."""
    sleeper = shutil.which("sleep") or "sleep"
    return [subprocess.Popen([sleeper, "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def run_child(args: argparse.Namespace, experience: bool) -> Optional[Dict[str, float]]:
    r = subprocess.run([sys.executable, "-m", "benchmarks.agent_bench", "--child",
                        "--collections", str(args.collections), "--per-user-top", str(args.per_user_top),
                        "--sessions", str(args.sessions), *(["--in-sessions"] if args.in_sessions else []),
                        *(["--experience"] if experience else [])],
                       capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def side_by_side(args: argparse.Namespace) -> int:
    """Rounds of (without, with) the experience collector on the same spawned processes."""
    procs = spawn(args.processes)
    runs: List[Dict[str, float]] = []
    try:
        time.sleep(1)
        for _ in range(args.rounds):
            for experience in (False, True):
                result = run_child(args, experience)
                if result is None:
                    return 1
                runs.append(dict(result, experience=experience))
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
    before = sorted(r["cpu_per_collection_s"] for r in runs if not r["experience"])
    after = sorted(r["cpu_per_collection_s"] for r in runs if r["experience"])
    median_before, median_after = before[len(before) // 2], after[len(after) // 2]
    last = runs[-1]
    print(f"agent benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{last['processes_seen']} processes ({last['user_processes_seen']} in sessions) and "
          f"{last['sessions_seen']} sessions on the host, {last['apps_reported']} applications reported")
    print("| run | experience collector | CPU per collection | peak RSS |")
    print("| --- | --- | --- | --- |")
    for i, r in enumerate(runs):
        print(f"| {i // 2 + 1} | {'with' if r['experience'] else 'without'} | "
              f"{r['cpu_per_collection_s'] * 1000:.1f} ms | {r['max_rss_bytes'] / 2**20:.1f} MiB |")
    change = (median_after / median_before - 1) * 100 if median_before else 0.0
    print(f"\nmedian {median_before * 1000:.1f} ms without, {median_after * 1000:.1f} ms with: {change:+.1f} % "
          f"a collection ({last['input_delay_observations']} input-delay observations in the last report)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median_before_s": median_before,
                                               "median_after_s": median_after, "change_percent": change}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2000, help="idle processes to add to the host")
    p.add_argument("--collections", type=int, default=30)
    p.add_argument("--per-user-top", type=int, default=10, help="per-user series (0: off)")
    p.add_argument("--sessions", type=int, default=100, help="sessions on the host (simulated source; 0: the OS's)")
    p.add_argument("--in-sessions", action="store_true",
                   help="place every process in a simulated session (per-user and per-application accounting)")
    p.add_argument("--logon-events", type=int, default=0,
                   help="new Windows logon events an interval for the logons collector (0: without it)")
    p.add_argument("--logon-render", choices=("values", "xml"), default="values",
                   help="how the events are rendered: values (what the agent does) or XML")
    p.add_argument("--experience", action="store_true",
                   help="without and with the experience collector (a fake PDH), side by side")
    p.add_argument("--rounds", type=int, default=2, help="with --experience: before/after pairs, alternated")
    p.add_argument("--interval", type=float, default=15.0)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.collections, args.per_user_top, args.sessions, args.in_sessions,
                               args.logon_events, args.logon_render, args.experience)))
        return 0
    if args.experience:
        return side_by_side(args)
    exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    procs = spawn(args.processes)
    try:
        time.sleep(1)
        r = subprocess.run([sys.executable, "-m", "benchmarks.agent_bench", "--child",
                            "--collections", str(args.collections), "--per-user-top", str(args.per_user_top),
                            "--sessions", str(args.sessions), *(["--in-sessions"] if args.in_sessions else []),
                            "--logon-events", str(args.logon_events), "--logon-render", args.logon_render],
                           capture_output=True, text=True, cwd=ROOT, timeout=1800)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        agent = json.loads(r.stdout.strip().splitlines()[-1])
        node = node_exporter(exporter, args.collections) if exporter else None
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
    load = agent["cpu_per_collection_s"] / args.interval
    print(f"agent benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{agent['processes_seen']} processes ({agent['user_processes_seen']} in sessions) and "
          f"{agent['sessions_seen']} sessions on the host, {agent['apps_reported']} applications reported, "
          f"{agent['logons_counted']} logons counted ({args.logon_events} events an interval, {args.logon_render}), "
          f"collectors: {', '.join(agent['collectors'])}")
    if args.logon_events:
        share = agent["logons_cpu_per_collection_s"] / max(1e-9, agent["cpu_per_collection_s"]
                                                           - agent["logons_cpu_per_collection_s"])
        print(f"logons collector alone: {agent['logons_cpu_per_collection_s'] * 1000:.2f} ms CPU a collection, "
              f"{share * 100:.1f} % of the rest of the collection")
    print("| program | CPU per collection | average load at 15 s | peak RSS |")
    print("| --- | --- | --- | --- |")
    print(f"| vdiwatch-agent | {agent['cpu_per_collection_s'] * 1000:.1f} ms | {load * 100:.2f} % of a core "
          f"| {agent['max_rss_bytes'] / 2**20:.1f} MiB |")
    if node:
        ratio = agent["cpu_per_collection_s"] / node["cpu_per_scrape_s"] if node["cpu_per_scrape_s"] else 0
        print(f"| node_exporter (per scrape) | {node['cpu_per_scrape_s'] * 1000:.1f} ms "
              f"| {node['cpu_per_scrape_s'] / args.interval * 100:.2f} % of a core "
              f"| {node['rss_bytes'] / 2**20:.1f} MiB |")
        print(f"\nagent / node_exporter CPU: {ratio:.2f}x")
    else:
        print("\nnode_exporter not found (Debian package prometheus-node-exporter): no comparison")
    if args.json:
        Path(args.json).write_text(json.dumps({"agent": agent, "node_exporter": node, "interval": args.interval}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
