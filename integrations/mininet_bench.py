#!/usr/bin/python3
"""Mininet over switchd against Mininet's own switches: pingall time and TCP
between two hosts, medians of several rounds.

    timeout 900 /usr/bin/python3 integrations/mininet_bench.py \\
        --switch switchd,lxbr,ovsbr --topo linear,2 --topo tree,2,3 --rounds 5

Per switch, topology and round:
- mn_s: wall time of the whole `mn --custom integrations/mininet.py --switch S
  --controller none --topo T --test pingall` (build, start, pingall, stop);
- pingall_s: `net.pingAll()` alone, through Mininet's Python API;
- tcp_gbps: iperf3 (one TCP stream, --seconds) from the first host to the last,
  in the same API run. Not `mn --test iperf`: Mininet 2.3.0 waits for iperf 2
  output that Debian 12's iperf 2.1 prints differently, and hangs.

Switches: switchd (integrations/mininet.py; owned daemon unless SWITCHD_SOCKET
is set; SWITCHD names the binary), lxbr (Mininet's LinuxBridge: the kernel
bridge, needs bridge-utils), ovsbr (Mininet's OVSBridge: Open vSwitch's kernel
datapath, against a private ovsdb-server and ovs-vswitchd), ovsbr-user (the
same with the userspace datapath, datapath=user, userspace-tso-enable=true).
A switch that cannot run is reported with the reason, not measured.
Every run loads integrations/mininet.py, whose cleanup removes only what the
run made. Prints a table; --json FILE writes every round.
"""

import argparse
import fcntl
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CUSTOM = os.path.join(HERE, "mininet.py")
MN = "/usr/bin/mn"
# Mininet's interface names are global: the tests (tests/mininet.rs) and this
# bench take this lock so that they never run at once.
LOCK = "/run/lock/switchd-mininet-tests.lock"
# This folder's mininet.py would shadow the mininet package.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]


def load_custom():
    """integrations/mininet.py as a module: SwitchdSwitch, and the cleanup that
    touches only what this process made."""
    spec = importlib.util.spec_from_file_location("switchd_mininet", CUSTOM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PrivateOvs:
    """ovsdb-server and ovs-vswitchd with their own database and sockets in a
    temporary directory (OVS_RUNDIR points ovs-vsctl, and so Mininet, at it);
    stopped by pid."""

    def __init__(self):
        for tool in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"):
            if not shutil.which(tool):
                raise RuntimeError("%s not installed" % tool)
        self.dir = tempfile.mkdtemp(prefix="switchd-mnbench-ovs-")
        self.pids = []
        d = self.dir
        self.env_before = {k: os.environ.get(k) for k in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR")}
        for k in self.env_before:
            os.environ[k] = d
        run = lambda *argv: subprocess.run(argv, check=True, capture_output=True, timeout=30)
        try:
            run("ovsdb-tool", "create", d + "/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
            run("ovsdb-server", "--remote=punix:%s/db.sock" % d, "--pidfile=%s/ovsdb.pid" % d,
                "--detach", "--log-file=%s/ovsdb.log" % d, d + "/conf.db")
            self.pids.append(int(open(d + "/ovsdb.pid").read()))
            run("ovs-vsctl", "--no-wait", "init")
            run("ovs-vsctl", "--no-wait", "set", "Open_vSwitch", ".",
                "other_config:userspace-tso-enable=true")
            run("ovs-vswitchd", "unix:%s/db.sock" % d, "--pidfile=%s/vswitchd.pid" % d,
                "--detach", "--log-file=%s/vswitchd.log" % d)
            self.pids.append(int(open(d + "/vswitchd.pid").read()))
        except (subprocess.CalledProcessError, OSError, ValueError) as e:
            self.stop()
            raise RuntimeError("private Open vSwitch did not start: %s" % e) from None

    def errors(self):
        """ovs-vswitchd's logged errors (why a bridge did not come up)."""
        try:
            with open(self.dir + "/vswitchd.log") as f:
                lines = [l.strip() for l in f if "|ERR|" in l or "|WARN|" in l]
        except OSError:
            return ""
        return "; ".join(dict.fromkeys(l.split("|", 4)[-1] for l in lines[-5:]))

    def stop(self):
        for pid in reversed(self.pids):
            try:
                os.kill(pid, 15)
            except OSError:
                pass
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.05)
        self.pids = []
        for k, v in self.env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(self.dir, ignore_errors=True)


def mn_round(switch, topo):
    """The whole `mn ... --test pingall` command: seconds, dropped %, output."""
    argv = ["timeout", "180", MN, "--custom", CUSTOM, "--switch", switch,
            "--controller", "none", "--topo", topo, "--test", "pingall"]
    t0 = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - t0
    out = result.stdout + result.stderr
    m = re.search(r"Results: (\d+)% dropped", out)
    if result.returncode != 0 or m is None or "Caught exception" in out:
        raise RuntimeError("mn --switch %s failed (%s): %s" % (switch, result.returncode, out[-1500:]))
    return seconds, int(m.group(1))


def tcp_gbps(client, server, seconds):
    """One iperf3 TCP stream client -> server, Gbit/s received."""
    srv = server.popen(["iperf3", "-s", "-1"])
    try:
        for _ in range(50):
            out = client.cmd("timeout %d iperf3 -c %s -t %d -J" % (seconds + 15, server.IP(), seconds))
            try:
                doc = json.loads(out[out.index("{"):])
            except ValueError:
                raise RuntimeError("iperf3 printed no JSON: %s" % out[-500:]) from None
            if "error" in doc and "refused" in doc["error"]:
                time.sleep(0.1)
                continue
            if "error" in doc:
                raise RuntimeError("iperf3: %s" % doc["error"])
            return doc["end"]["sum_received"]["bits_per_second"] / 1e9
        raise RuntimeError("iperf3 server on %s never listened" % server.name)
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def api_round(switch_cls, topo, seconds):
    """pingAll and TCP through Mininet's Python API: (pingall s, dropped %, Gbit/s)."""
    from mininet.net import Mininet
    from mininet.topo import LinearTopo
    from mininet.topolib import TreeTopo
    from mininet.util import buildTopo

    net = Mininet(topo=buildTopo({"linear": LinearTopo, "tree": TreeTopo}, topo),
                  switch=switch_cls, controller=None)
    try:
        net.start()
        t0 = time.monotonic()
        dropped = net.pingAll(timeout="1")
        ping_s = time.monotonic() - t0
        gbps = tcp_gbps(net.hosts[0], net.hosts[-1], seconds)
    finally:
        net.stop()
    return ping_s, dropped, gbps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switch", default="switchd,lxbr,ovsbr",
                        help="comma-separated: switchd, lxbr, ovsbr, ovsbr-user")
    parser.add_argument("--topo", action="append", help="Mininet topology (repeatable); default linear,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 duration")
    parser.add_argument("--json", help="write every round here")
    parser.add_argument("--no-lock", action="store_true",
                        help="do not take %s (the caller holds it)" % LOCK)
    args = parser.parse_args()
    topos = args.topo or ["linear,2"]
    if os.geteuid() != 0:
        sys.exit("mininet_bench: Mininet needs root")

    if not args.no_lock:
        lock = open(LOCK, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
    custom = load_custom()
    from mininet.log import setLogLevel
    from mininet.node import OVSBridge
    from mininet.nodelib import LinuxBridge
    from functools import partial

    setLogLevel("warning")
    classes = {
        "switchd": ("switchd", custom.SwitchdSwitch),
        "lxbr": ("lxbr", LinuxBridge),
        "ovsbr": ("ovsbr", OVSBridge),
        "ovsbr-user": ("ovsbr,datapath=user", partial(OVSBridge, datapath="user")),
    }
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "kernel": os.uname().release, "cpus": os.cpu_count(), "rounds": args.rounds,
           "iperf3_seconds": args.seconds, "results": {}, "unavailable": {}}
    try:
        doc["switchd"] = custom._binary("switchd", "SWITCHD")
    except Exception as e:  # pylint: disable=broad-except
        doc["switchd"] = str(e)
    for name in args.switch.split(","):
        mn_switch, cls = classes[name]
        ovs = None
        try:
            if name.startswith("ovsbr"):
                ovs = PrivateOvs()
            if name == "lxbr" and not shutil.which("brctl"):
                raise RuntimeError("brctl not installed (apt-get install bridge-utils)")
            for topo in topos:
                rows = {"mn_s": [], "mn_dropped": [], "pingall_s": [], "dropped": [], "tcp_gbps": []}
                for r in range(args.rounds):
                    mn_s, mn_dropped = mn_round(mn_switch, topo)
                    if mn_dropped == 100:
                        raise RuntimeError("mn --switch %s: pingall dropped 100%%" % mn_switch)
                    ping_s, dropped, gbps = api_round(cls, topo, args.seconds)
                    for k, v in (("mn_s", mn_s), ("mn_dropped", mn_dropped), ("pingall_s", ping_s),
                                 ("dropped", dropped), ("tcp_gbps", gbps)):
                        rows[k].append(round(v, 3))
                    print("%-10s %-9s round %d: mn %.2f s, pingall %.2f s (%d%% dropped), TCP %.2f Gbit/s"
                          % (name, topo, r + 1, mn_s, ping_s, dropped, gbps), flush=True)
                rows["median"] = {k: statistics.median(v) for k, v in rows.items()}
                doc["results"].setdefault(name, {})[topo] = rows
        except (RuntimeError, SystemExit, Exception) as e:  # pylint: disable=broad-except
            reason = str(e).strip() or repr(e)
            if ovs is not None and ovs.errors():
                reason += " (ovs-vswitchd: %s)" % ovs.errors()
            print("%s: cannot run: %s" % (name, reason), flush=True)
            doc["unavailable"][name] = reason[-1500:]
        finally:
            if ovs is not None:
                ovs.stop()
            custom.cleanup()

    print("\n| switch | topology | mn --test pingall, s | pingAll(), s | TCP, Gbit/s |")
    print("|---|---|---:|---:|---:|")
    for name, per_topo in doc["results"].items():
        for topo, rows in per_topo.items():
            m = rows["median"]
            print("| %s | %s | %.2f | %.2f | %.1f |" % (name, topo, m["mn_s"], m["pingall_s"], m["tcp_gbps"]))
    for name, reason in doc["unavailable"].items():
        print("| %s | cannot run: %s |" % (name, reason.splitlines()[-1] if reason else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print("wrote %s" % args.json)


if __name__ == "__main__":
    main()
