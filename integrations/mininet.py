"""switchd as a Mininet switch.

    mn --custom integrations/mininet.py --switch switchd --controller none \\
       --topo tree,2,3 --test pingall

Each Mininet switch is a switchd bridge without an internal port
(`add-br NAME --no-internal`) whose ports are the switch's `sN-ethM`
interfaces, links between switches included. The bridges go to the switchd
that `SWITCHD_SOCKET` (or `--switch switchd,socket=PATH`) names; without one,
the class starts a switchd of its own (its own socket and database in a
private temporary directory, stopped by pid when the last bridge goes, and
killed with Mininet if Mininet is killed). While that daemon runs,
`SWITCHD_SOCKET` names it, so `sh switchctl show` works at the mininet> prompt.
Bridge names are the switch names (s1, s2, ...), or `prefix` + the name with
`--switch switchd,prefix=t1-` or `SWITCHD_BRIDGE_PREFIX=t1-`: a name that
another user of a shared daemon already has is refused, never taken over.

switchctl and switchd are looked up in `$SWITCHCTL` / `$SWITCHD`, then PATH,
then this repository's target/debug and target/release. `SWITCHD_ARGS` adds
arguments to an owned switchd (`SWITCHD_ARGS='--offload none'`).

Loading this file replaces Mininet's cleanup (mininet.clean.cleanup,
Cleanup.cleanup and the `cleanup` that `mn` calls after an error or Ctrl-C,
which `--custom` overrides by name). Mininet's own kills processes by name,
deletes /tmp/*.log and every `*-ethN` link on the machine; this one removes
only what this run made (its bridges, the root-namespace links it created,
the processes of its nodes and their namespaces, its daemon) and what dead
runs of this class recorded in /run/switchd-mininet. So after a crash,
`mn --custom integrations/mininet.py -c` is the safe `mn -c`. Under `mn`,
SIGTERM and SIGHUP exit through the same cleanup. See docs/MININET.md.
"""

# `mn --custom` copies every name defined here into mn's own globals, so
# anything that is not an intended override is private (leading underscore)
# or the very object mn already has under that name (os, sys, time, info...).

import atexit as _atexit
import ctypes as _ctypes
import json as _json
import os
import shlex as _shlex
import shutil as _shutil
import signal as _signal
import subprocess as _subprocess
import sys
import tempfile as _tempfile
import time

import mininet.clean as _mnclean
import mininet.link as _mnlink
import mininet.node as _mnnode
import mininet.util as _mnutil
from mininet.log import debug, error, info, warn
from mininet.node import Switch as _Switch

# `mn --custom` runs this file through exec() without __file__ or __name__.
_SOURCE = os.path.abspath((lambda: 0).__code__.co_filename)
_REPO = os.path.dirname(os.path.dirname(_SOURCE))
_VIA_MN_CUSTOM = "__name__" not in globals()

_STATE_DIR = os.environ.get("SWITCHD_MININET_STATE_DIR", "/run/switchd-mininet")
_IFNAMSIZ = 15
_CTL_TIMEOUT_SECS = 60
_START_TIMEOUT_SECS = 10
_STOP_TIMEOUT_SECS = 10
# One switchctl request at most this many chained commands.
_CHAIN_MAX = 2000


def _binary(name, env):
    """The path of switchd or switchctl: $env, PATH, then this repository's
    target/debug and target/release."""
    path = os.environ.get(env)
    if path:
        if not os.access(path, os.X_OK):
            raise Exception("%s=%s is not an executable file" % (env, path))
        return path
    found = _shutil.which(name)
    if found:
        return found
    for profile in ("debug", "release"):
        path = os.path.join(_REPO, "target", profile, name)
        if os.access(path, os.X_OK):
            return path
    raise Exception(
        "%s not found: set %s, put it on PATH, or build it in %s "
        "(cargo build --workspace --bins)" % (name, env, _REPO)
    )


def _ctl(socket, args, check=True, timeout=_CTL_TIMEOUT_SECS):
    """Runs switchctl against `socket`; raises with its message if it fails
    or does not answer within `timeout` seconds."""
    argv = [_binary("switchctl", "SWITCHCTL"), "--socket", socket] + list(args)
    debug("*** switchctl %s\n" % " ".join(argv[1:]))
    try:
        result = _subprocess.run(
            argv,
            stdin=_subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except _subprocess.TimeoutExpired:
        raise Exception(
            "switchctl %s: no answer from %s in %d s" % (args[0], socket, timeout)
        ) from None
    if check and result.returncode != 0:
        raise Exception(result.stderr.strip() or "switchctl %s failed" % args[0])
    return result


def _joined(commands):
    """[[cmd, args...], ...] as one switchctl argument list joined by `--`."""
    argv = []
    for command in commands:
        if argv:
            argv.append("--")
        argv.extend(command)
    return argv


def _ctl_chain(socket, commands):
    """Runs `commands` as chained requests of at most _CHAIN_MAX commands."""
    for i in range(0, len(commands), _CHAIN_MAX):
        _ctl(socket, _joined(commands[i : i + _CHAIN_MAX]))


def _proc_stat(pid):
    """(session id, start time in ticks) of `pid`, or None if it is gone (or a
    zombie: dead, only waiting for its parent to reap it)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[3]), int(fields[19])


def _alive(pid, start):
    """True if `pid` is still the process that started at `start`."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == start


def _ifindex(name):
    try:
        with open("/sys/class/net/%s/ifindex" % name) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _delete_links(links):
    """Deletes root-namespace links {name: ifindex} that still have the ifindex
    they had when this run made them (so never a later link of that name)."""
    for name, ifindex in sorted(links.items()):
        if ifindex is not None and _ifindex(name) == ifindex:
            _subprocess.run(
                ["ip", "link", "del", "dev", name],
                stdin=_subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
            )


def _kill_processes(sessions, netns_inodes):
    """SIGKILLs every process in one of `sessions` (session ids) or in a
    network namespace whose inode is in `netns_inodes`; not this process."""
    me = os.getpid()
    for _ in range(50):
        victims = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            pid = int(entry)
            stat = _proc_stat(pid)
            if stat is None:
                continue
            if stat[0] in sessions:
                victims.append(pid)
            elif netns_inodes:
                try:
                    if os.stat("/proc/%d/ns/net" % pid).st_ino in netns_inodes:
                        victims.append(pid)
                except OSError:
                    pass
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, _signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    warn("*** switchd cleanup: some processes would not die\n")


def _libc_prctl():
    try:
        return _ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child, before exec: SIGTERM when the parent dies (a killed mn
    takes its switchd with it)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(_signal.SIGTERM), 0, 0, 0)


class _OwnedDaemon:
    """A switchd started for this run: its own socket, database and log in a
    private temporary directory; stopped by pid."""

    def __init__(self):
        binary = _binary("switchd", "SWITCHD")
        # Found before anything starts: a missing one fails here, leaving nothing.
        _binary("switchctl", "SWITCHCTL")
        self.dir = _tempfile.mkdtemp(prefix="switchd-mininet-")
        self.socket = os.path.join(self.dir, "switchd.sock")
        self.log = os.path.join(self.dir, "switchd.log")
        argv = [
            binary,
            "--socket",
            self.socket,
            "--db",
            os.path.join(self.dir, "switchd.json"),
        ] + _shlex.split(os.environ.get("SWITCHD_ARGS", ""))
        with open(self.log, "ab") as log:
            self.proc = _subprocess.Popen(
                argv,
                stdin=_subprocess.DEVNULL,
                stdout=_subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        stat = _proc_stat(self.proc.pid)
        self.start = stat[1] if stat else None
        try:
            self._wait_ready()
        except BaseException:
            # Nothing records this daemon yet: stop it here (Ctrl-C included).
            self.stop()
            raise
        info(
            "*** switchd: started pid %d on %s\n" % (self.proc.pid, self.socket)
        )

    def _wait_ready(self):
        deadline = time.time() + _START_TIMEOUT_SECS
        while True:
            if self.proc.poll() is not None:
                raise Exception(
                    "switchd exited (%s) at start: %s"
                    % (self.proc.returncode, self._log_tail())
                )
            # An answer, not a connection: requests are served once the
            # (empty) configuration is restored.
            try:
                if _ctl(self.socket, ["list-br"], check=False, timeout=2).returncode == 0:
                    return
            except Exception:  # pylint: disable=broad-except
                pass
            if time.time() > deadline:
                raise Exception(
                    "switchd did not answer on %s in %d s"
                    % (self.socket, _START_TIMEOUT_SECS)
                )
            time.sleep(0.02)

    def _log_tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:].strip()
        except OSError:
            return ""

    def _remove_dir(self):
        _shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self):
        """SIGTERM, up to 10 s for a clean exit, then SIGKILL; removes the dir."""
        if self.proc.poll() is None:
            self.proc.send_signal(_signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT_SECS)
            except _subprocess.TimeoutExpired:
                warn("*** switchd pid %d ignored SIGTERM; killing it\n" % self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        info("*** switchd: stopped pid %d\n" % self.proc.pid)
        self._remove_dir()


class _Run:
    """Everything this process made through Mininet that a cleanup must undo,
    mirrored in a state file so that a later cleanup can finish the job if
    this process is killed.

    Only the process that loaded this file acts on it (not a forked child)."""

    def __init__(self):
        self.owner = os.getpid()
        stat = _proc_stat(self.owner)
        self.owner_start = stat[1] if stat else 0
        # Bridges this run added: name -> socket.
        self.bridges = {}
        # Root-namespace links this run created: name -> ifindex.
        self.links = {}
        # Node shells: pid -> (start time, node name).
        self.shells = {}
        # Namespaces of nodes not terminated yet: shell pid -> open fd of the
        # namespace. Holding it keeps the inode from being reused, so killing
        # by namespace never reaches a stranger's.
        self.netns = {}
        self.daemon = None
        self.exported_socket = False
        self.state_path = os.path.join(_STATE_DIR, "%d.json" % self.owner)

    # State file ------------------------------------------------------------

    def _state(self):
        return {
            "pid": self.owner,
            "start": self.owner_start,
            "bridges": self.bridges,
            "links": self.links,
            "shells": [[pid, start] for pid, (start, _) in self.shells.items()],
            "daemon": None
            if self.daemon is None
            else {
                "pid": self.daemon.proc.pid,
                "start": self.daemon.start,
                "dir": self.daemon.dir,
            },
        }

    def save(self):
        if os.getpid() != self.owner:
            return
        try:
            os.makedirs(_STATE_DIR, mode=0o700, exist_ok=True)
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as f:
                _json.dump(self._state(), f)
            os.replace(tmp, self.state_path)
        except OSError as e:
            debug("*** switchd: cannot save %s: %s\n" % (self.state_path, e))

    def _forget_state(self):
        try:
            os.unlink(self.state_path)
        except OSError:
            pass

    # Daemon ----------------------------------------------------------------

    def socket_for(self, explicit):
        """The socket a switch's bridge goes to, starting the owned daemon if
        nobody named a shared one."""
        if explicit:
            return explicit
        env = os.environ.get("SWITCHD_SOCKET")
        if env and not (self.daemon and env == self.daemon.socket):
            return env
        if self.daemon is None:
            self.daemon = _OwnedDaemon()
            self.save()
            if not env:
                os.environ["SWITCHD_SOCKET"] = self.daemon.socket
                self.exported_socket = True
        return self.daemon.socket

    def release_daemon(self):
        """Stops the owned daemon once none of this run's bridges is on it."""
        if self.daemon is None:
            return
        if any(s == self.daemon.socket for s in self.bridges.values()):
            return
        if self.exported_socket:
            if os.environ.get("SWITCHD_SOCKET") == self.daemon.socket:
                del os.environ["SWITCHD_SOCKET"]
            self.exported_socket = False
        self.daemon.stop()
        self.daemon = None
        self.save()

    # Bridges ---------------------------------------------------------------

    def add_bridges(self, switches):
        """One chained request per daemon: every bridge and its ports."""
        by_socket = {}
        for switch in switches:
            if switch.inNamespace:
                raise Exception(
                    "%s: a switchd bridge cannot be in a namespace" % switch.name
                )
            socket = self.socket_for(switch.switchdSocket)
            commands = by_socket.setdefault(socket, [])
            commands.append(["add-br", switch.bridge, "--no-internal"])
            commands += [["add-port", switch.bridge, p] for p in switch.portNames()]
        for socket, commands in by_socket.items():
            # A request is all or nothing; of one split in several, the parts
            # before a failure stay, so are recorded as each succeeds.
            for i in range(0, len(commands), _CHAIN_MAX):
                part = commands[i : i + _CHAIN_MAX]
                try:
                    _ctl(socket, _joined(part))
                except Exception as e:
                    self.release_daemon()
                    hint = ""
                    if "already exists" in str(e):
                        hint = (
                            " (another user's bridge? choose a prefix: "
                            "--switch switchd,prefix=NAME or SWITCHD_BRIDGE_PREFIX)"
                        )
                    raise Exception("switchd at %s: %s%s" % (socket, e, hint)) from None
                for command in part:
                    if command[0] == "add-br":
                        self.bridges[command[1]] = socket
                self.save()

    def del_bridges(self, switches):
        by_socket = {}
        for switch in switches:
            socket = self.bridges.get(switch.bridge)
            if socket is not None:
                by_socket.setdefault(socket, []).append(switch.bridge)
            switch.started = False
        for socket, bridges in by_socket.items():
            try:
                _ctl_chain(socket, [["--if-exists", "del-br", b] for b in bridges])
            finally:
                for b in bridges:
                    self.bridges.pop(b, None)
                self.save()
        self.release_daemon()

    # Hooks into Mininet ----------------------------------------------------

    def shell_started(self, node):
        if os.getpid() != self.owner or not node.pid:
            return
        stat = _proc_stat(node.pid)
        if stat is None:
            return
        self.shells[node.pid] = (stat[1], node.name)
        if node.inNamespace:
            try:
                self.netns[node.pid] = os.open(
                    "/proc/%d/ns/net" % node.pid, os.O_RDONLY | os.O_CLOEXEC
                )
            except OSError:
                pass
        self.save()

    def node_terminated(self, pid):
        fd = self.netns.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def link_made(self, names_and_nodes):
        if os.getpid() != self.owner:
            return
        for name, node in names_and_nodes:
            if node is None or not node.inNamespace:
                ifindex = _ifindex(name)
                if ifindex is not None:
                    self.links[name] = ifindex
        self.save()

    # Cleanup ---------------------------------------------------------------

    def cleanup(self):
        """Undoes what this run made and Mininet did not stop: bridges,
        processes of its nodes (their sessions and namespaces), links, the
        owned daemon. Safe to call more than once."""
        if os.getpid() != self.owner:
            return
        for socket in sorted(set(self.bridges.values())):
            bridges = sorted(b for b, s in self.bridges.items() if s == socket)
            try:
                _ctl_chain(socket, [["--if-exists", "del-br", b] for b in bridges])
                info("*** switchd: deleted bridges %s\n" % " ".join(bridges))
            except Exception as e:  # pylint: disable=broad-except
                error("*** switchd: could not delete bridges %s: %s\n" % (bridges, e))
            for b in bridges:
                self.bridges.pop(b, None)
        sessions = {pid for pid, (start, _) in self.shells.items() if _alive(pid, start)}
        inodes = set()
        for pid, fd in self.netns.items():
            try:
                inodes.add(os.fstat(fd).st_ino)
            except OSError:
                pass
        if sessions or inodes:
            _kill_processes(sessions, inodes)
            info("*** switchd: killed the processes of %d Mininet nodes\n" % len(sessions))
        for fd in self.netns.values():
            os.close(fd)
        self.netns.clear()
        self.shells.clear()
        if self.links:
            _delete_links(self.links)
            self.links.clear()
        self.release_daemon()
        self._forget_state()


def _reap_dead_runs():
    """Finishes the cleanup of runs of this class that were killed: their
    bridges (only if every port is one of the run's links), links (same name
    and ifindex), still-running shells and daemon (same pid and start time)."""
    try:
        names = sorted(os.listdir(_STATE_DIR))
    except OSError:
        return
    states = {}
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(_STATE_DIR, name)
        try:
            with open(path) as f:
                states[path] = _json.load(f)
        except (OSError, ValueError):
            continue
    live_bridges = set()
    dead = []
    for path, state in states.items():
        if state.get("pid") == os.getpid() or _alive(state.get("pid", 0), state.get("start")):
            live_bridges.update(state.get("bridges", {}))
        else:
            dead.append((path, state))
    for path, state in dead:
        info("*** switchd: cleaning up after dead run pid %s\n" % state.get("pid"))
        links = {k: v for k, v in state.get("links", {}).items()}
        daemon = state.get("daemon") or {}
        for bridge, socket in state.get("bridges", {}).items():
            if bridge in live_bridges:
                continue
            try:
                _reap_bridge(socket, bridge, links)
            except Exception as e:  # pylint: disable=broad-except
                error("*** switchd: could not check bridge %s: %s\n" % (bridge, e))
        sessions = {pid for pid, start in state.get("shells", []) if _alive(pid, start)}
        if sessions:
            _kill_processes(sessions, set())
        _delete_links(links)
        if daemon and _alive(daemon.get("pid", 0), daemon.get("start")):
            try:
                os.kill(daemon["pid"], _signal.SIGTERM)
            except OSError:
                pass
            deadline = time.time() + _STOP_TIMEOUT_SECS
            while _alive(daemon["pid"], daemon.get("start")) and time.time() < deadline:
                time.sleep(0.05)
            if _alive(daemon["pid"], daemon.get("start")):
                warn("*** switchd pid %d ignored SIGTERM; killing it\n" % daemon["pid"])
                try:
                    os.kill(daemon["pid"], _signal.SIGKILL)
                except OSError:
                    pass
        if _is_owned_dir(daemon.get("dir", "")):
            _shutil.rmtree(daemon["dir"], ignore_errors=True)
        try:
            os.unlink(path)
        except OSError:
            pass


def _is_owned_dir(path):
    """True for a directory this class makes for its daemon: directly in the
    temporary directory, named switchd-mininet-*, whatever the path says."""
    real = os.path.realpath(path) if path else ""
    return (
        os.path.dirname(real) == os.path.realpath(_tempfile.gettempdir())
        and os.path.basename(real).startswith("switchd-mininet-")
    )


def _reap_bridge(socket, bridge, run_links):
    """Deletes a dead run's bridge only if it has ports and every one is a
    link the run made: by name and interface index, or by name alone once the
    interface is gone (a dead host's namespace takes its veth pair along). An
    empty bridge of that name, or one with other ports, is someone else's."""
    result = _ctl(socket, ["--format", "json", "show"], check=False)
    if result.returncode != 0:
        return
    try:
        shown = _json.loads(result.stdout)
    except ValueError:
        return
    for b in shown.get("bridges", []):
        if b.get("name") != bridge:
            continue
        ports = b.get("ports", [])
        if ports and all(
            p.get("name") in run_links
            and p.get("ifindex") in (None, run_links[p.get("name")])
            for p in ports
        ):
            _ctl(socket, ["--if-exists", "del-br", bridge], check=False)
        else:
            warn(
                "*** switchd: left bridge %s on %s: it has ports this run did not make\n"
                % (bridge, socket)
            )


def _the_run():
    # One registry per process even if this file is loaded twice (as
    # `--custom` and by import): it lives on the mininet.clean module.
    run = getattr(_mnclean, "_switchd_run", None)
    if run is None or run.owner != os.getpid():
        run = _Run()
        _mnclean._switchd_run = run
    return run


_RUN = _the_run()


class SwitchdSwitch(_Switch):
    """A Mininet switch that is a switchd bridge.

    Parameters (`--switch switchd,prefix=t1-,socket=/run/sd.sock`):
    prefix: put before the switch name to make the bridge name
        (default $SWITCHD_BRIDGE_PREFIX or none); at most 15 bytes in all.
    socket: a running switchd's control socket (default $SWITCHD_SOCKET;
        without either, a switchd owned by this run)."""

    def __init__(self, name, prefix=None, socket=None, batch=False, **params):
        if prefix is None:
            prefix = os.environ.get("SWITCHD_BRIDGE_PREFIX", "")
        self.bridge = prefix + name
        # Checked before the node's shell starts, which a raise would leave.
        if len(self.bridge.encode()) > _IFNAMSIZ:
            raise Exception(
                "bridge name %s is longer than %d bytes" % (self.bridge, _IFNAMSIZ)
            )
        _Switch.__init__(self, name, **params)
        self.switchdSocket = socket
        self.batch = batch
        self.started = False

    def portNames(self):
        """The interfaces that are ports: all but the control one (`lo`, port 0)
        and any given an address, as OVSSwitch does."""
        return [
            intf.name
            for intf in self.intfList()
            if self.ports[intf] and not intf.IP()
        ]

    @classmethod
    def _add(cls, switches):
        _RUN.add_bridges(switches)
        for switch in switches:
            switch.started = True

    def start(self, controllers):
        """Adds the bridge and its ports; deferred to batchStartup when Mininet
        starts all switches at once."""
        if self.batch or self.started:
            return
        self._add([self])

    @classmethod
    def batchStartup(cls, switches):
        """All bridges and ports in one chained request."""
        todo = [s for s in switches if not s.started]
        if todo:
            cls._add(todo)
        for switch in switches:
            switch.batch = False
        return switches

    def stop(self, deleteIntfs=True):
        try:
            _RUN.del_bridges([self])
        except Exception as e:  # pylint: disable=broad-except
            # The rest of the stop (its interfaces, the run's daemon) goes on.
            error("*** switchd: %s: %s\n" % (self.bridge, e))
        _Switch.stop(self, deleteIntfs)

    @classmethod
    def batchShutdown(cls, switches):
        """All bridges deleted in one chained request (Mininet then terminates
        each switch's shell)."""
        try:
            _RUN.del_bridges(switches)
        except Exception as e:  # pylint: disable=broad-except
            error("*** switchd: %s\n" % e)
        return switches

    def connected(self):
        return self.started

    def socketPath(self):
        """The control socket of the daemon this switch's bridge is on."""
        socket = _RUN.bridges.get(self.bridge)
        if socket is None:
            raise Exception("%s is not started" % self.name)
        return socket

    def attach(self, intf):
        "Adds a port to a running switch (after net.addLink)."
        # A port deleted with its link stays configured, and comes back by
        # itself when a new link takes its name.
        _ctl(self.socketPath(), ["--may-exist", "add-port", self.bridge, str(intf)])

    def detach(self, intf):
        _ctl(self.socketPath(), ["--if-exists", "del-port", self.bridge, str(intf)])

    def dpctl(self, *args):
        """`dpctl CMD ARGS` at the mininet> prompt runs `switchctl CMD BRIDGE
        ARGS` for each switch (fdb-show, dump-ports, list-ports, ...)."""
        if not args:
            return "usage: dpctl COMMAND [ARGS] (a switchctl command taking a bridge)\n"
        try:
            result = _ctl(
                self.socketPath(), [args[0], self.bridge] + list(args[1:]), check=False
            )
        except Exception as e:  # pylint: disable=broad-except
            # The prompt shows it; an exception would end the session.
            return "%s\n" % e
        return result.stdout + result.stderr


def cleanup():
    """Replaces mininet.clean.cleanup: undoes what this run made, and what dead
    runs of this class recorded; never anything else on the machine."""
    info("*** switchd: cleaning up only what this run made\n")
    _RUN.cleanup()
    _reap_dead_runs()
    for callback in list(_mnclean.Cleanup.callbacks):
        callback()
    info("*** Cleanup complete.\n")


def _install():
    """Points Mininet's cleanup at ours and records what Mininet creates."""
    original = getattr(_mnclean, "_switchd_original_cleanup", None)
    if original is None:
        original = _mnclean.cleanup
        _mnclean._switchd_original_cleanup = original
    _mnclean.cleanup = cleanup
    _mnclean.Cleanup.cleanup = classmethod(lambda cls: cleanup())
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "cleanup", None) is original:
        main.cleanup = cleanup

    if not getattr(_mnnode.Node.startShell, "_switchd", False):
        start_shell = _mnnode.Node.startShell
        terminate = _mnnode.Node.terminate

        def startShell(self, *args, **kwargs):
            result = start_shell(self, *args, **kwargs)
            _the_run().shell_started(self)
            return result

        def terminateNode(self):
            pid = self.pid
            try:
                return terminate(self)
            finally:
                _the_run().node_terminated(pid)

        startShell._switchd = True
        _mnnode.Node.startShell = startShell
        _mnnode.Node.terminate = terminateNode

    if not getattr(_mnlink.makeIntfPair, "_switchd", False):
        make_pair = _mnlink.makeIntfPair

        def makeIntfPair(intf1, intf2, addr1=None, addr2=None, node1=None,
                         node2=None, *args, **kwargs):
            result = make_pair(intf1, intf2, addr1, addr2, node1, node2, *args, **kwargs)
            _the_run().link_made([(intf1, node1), (intf2, node2)])
            return result

        makeIntfPair._switchd = True
        _mnlink.makeIntfPair = makeIntfPair
        _mnutil.makeIntfPair = makeIntfPair

    if not getattr(_mnclean, "_switchd_atexit", False):
        _mnclean._switchd_atexit = True
        _atexit.register(lambda: _the_run().cleanup())

    if _VIA_MN_CUSTOM:
        # mn catches Exception and KeyboardInterrupt, not a SIGTERM (timeout,
        # kill) or SIGHUP: exit through atexit, so the cleanup above runs.
        def _exit_on_signal(signum, _frame):
            _signal.signal(signum, _signal.SIG_IGN)
            raise SystemExit(128 + signum)

        for signum in (_signal.SIGTERM, _signal.SIGHUP):
            _signal.signal(signum, _exit_on_signal)


_install()

switches = {"switchd": SwitchdSwitch}
