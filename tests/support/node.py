"""A real Kubernetes node for the tests: a kubelet with Debian's containerd, runc and CNI plugins.

kwok nodes run nothing, and the process-backed kubelet (tests/support/kubelet.py) runs a Job's
command as a local process. `RealNode` runs pods for real: the kubelet `make tools` builds from
the pinned k8s.io/kubernetes module, joined to the local control plane, starts every pod through
containerd's CRI with runc, in a network namespace on a CNI bridge, from images imported into
containerd (the ragops images' OCI archives, and a pause image built from tools/pause since no
registry serves registry.k8s.io/pause here). Probes, security contexts, volumes, resource limits,
restarts and the Job controller's view of exit codes are all the kubelet's own.

What this machine lacks, and what stands in for it (each tied to this one node and removed by
`stop()`):
- No kube-proxy: the one Service pods need, `kubernetes` (the operator's API server), is a DNAT
  rule from the bridge to the API server's loopback port; other Services do not route, so tests
  reach pods by pod IP. Running a kube-proxy would rewrite the host's whole nat table, which
  concurrent test runs share.
- No CoreDNS: dnsmasq on the bridge's gateway is the cluster DNS, and knows one name,
  `kubernetes.default.svc.cluster.local` (Kopf reaches the API server by that name); every other
  name fails to resolve, so the tests' DSNs and URLs use IP addresses.
- The bridge's gateway address stands for "the host" to pods: TCP to it is forwarded to the same
  port on 127.0.0.1 (route_localnet on that bridge only), where the tests' servers listen.
- Nothing from a pod leaves the machine: packets from the bridge that are not for the host or
  another pod are dropped.
- The kubelet authenticates as the test admin (system:masters), not as system:node:<name>.
- Swap, cgroup v1 (this host runs the hybrid layout) and a missing CAP_SYS_RESOURCE (no OOM score
  below 0, no higher file limits) are tolerated by configuration, as the kubelet allows.

Every path, the bridge, the pod subnet, the cgroup root and the ports are this node's own, so two
test runs on one machine do not meet. Needs root. Test infrastructure, not product code.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.controlplane import TOOLS_BIN, ControlPlane, ControlPlaneError, ProcessOwner
from tests.support.http_double import free_port
from tests.support.podman import podman_env

CNI_BIN = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "sysctl", "buildah", "dnsmasq")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
"""The sandbox image containerd 1.6 asks for unless told otherwise; kept, so nothing is pulled."""
KUBERNETES_SERVICE_IP = "10.0.0.1"
"""The `kubernetes` Service's ClusterIP: the first address of controlplane.SERVICE_CIDR."""
CGROUP = Path("/sys/fs/cgroup")


def unavailable_reason() -> str | None:
    """Why a real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (network namespaces, cgroups, mounts, iptables)"
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    missing += [str(CNI_BIN / plugin) for plugin in CNI_PLUGINS if not (CNI_BIN / plugin).exists()]
    missing += [str(TOOLS_BIN / name) for name in ("kubelet", "pause") if not (TOOLS_BIN / name).exists()]
    if missing:
        return f"missing {', '.join(missing)} (`make tools` installs and builds them)"
    if not CGROUP.is_dir():
        return f"no cgroup filesystem at {CGROUP}"
    return None


def _run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ControlPlaneError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.244.0.0/16 no route on this machine uses yet (another run's node, say)."""
    routes = _run("ip", "-json", "route", "show").stdout
    taken = [ipaddress.ip_network(route["dst"]) for route in json.loads(routes) if route.get("dst", "").count(".") == 3]
    candidates = list(ipaddress.IPv4Network("10.244.0.0/16").subnets(new_prefix=24))[1:]
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise ControlPlaneError("no free /24 in 10.244.0.0/16 for the test node's pods")


def _cgroup_hierarchies() -> list[Path]:
    """The directories a cgroup root must exist in: each v1 hierarchy, or the one v2 tree."""
    if (CGROUP / "cgroup.controllers").exists():
        return [CGROUP]
    return [path for path in sorted(CGROUP.iterdir()) if path.is_dir() and not path.is_symlink()]


@dataclass
class RealNode(ProcessOwner):
    """A kubelet + containerd node of `plane`. Use `start()` and `stop()`, or as a context manager."""

    plane: ControlPlane
    workdir: Path
    archives: Sequence[Path] = ()
    """OCI archives imported into containerd before the kubelet starts (the images pods run)."""
    name: str = "node-1"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _rules: list[list[str]] = field(default_factory=list)
    _subnet: ipaddress.IPv4Network | None = None

    # ---- what tests use ------------------------------------------------------------------------

    @property
    def bridge(self) -> str:
        return f"rgp{self.id[:8]}"  # at most 15 characters: an interface name

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        assert self._subnet is not None, "start() the node first"
        return self._subnet

    @property
    def host_address(self) -> str:
        """The bridge gateway: where a pod reaches the tests' loopback servers (same port)."""
        return str(next(self.subnet.hosts()))

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/ragops-node-{self.id}"

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's log as the kubelet wrote it (newest attempt), read from disk."""
        attempts = sorted((self.workdir / "pod-logs").glob(f"{namespace}_{pod}_*/{container}/*.log"))
        return attempts[-1].read_text(errors="replace") if attempts else "(no log)"

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run("ctr", f"--address={self.socket}", "--namespace=k8s.io", *args, timeout=timeout)

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RealNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_network()
            self._start_dns()
            self._start_containerd()
            self._import_images()
            self._start_kubelet()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Removes this node's pods, then everything the node made: processes, mounts, rules, cgroups."""
        if "kubelet" in self.processes and self.processes["kubelet"].poll() is None:
            with contextlib.suppress(Exception):
                self._drain()
        for name in ("kubelet", "containerd", "dnsmasq"):
            process = self.processes.pop(name, None)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._kill_shims()
        self._kill_pod_processes()
        self._remove_pod_networks()
        self._unmount()
        for rule in reversed(self._rules):
            _run("iptables", *["-D" if word in ("-A", "-I") else word for word in rule], check=False)
        self._rules.clear()
        if self._subnet is not None:
            _run("ip", "link", "delete", self.bridge, check=False)
        for hierarchy in _cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            if root.is_dir():
                for directory in sorted(root.glob("**/"), key=lambda path: len(path.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        directory.rmdir()

    # ---- pieces ------------------------------------------------------------------------------

    def _rule(self, *rule: str) -> None:
        _run("iptables", *rule)
        self._rules.append(list(rule))

    def _start_network(self) -> None:
        self._subnet = _free_subnet()
        gateway = f"{self.host_address}/{self.subnet.prefixlen}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "address", "add", gateway, "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        _run("sysctl", "-q", "-w", f"net.ipv4.conf.{self.bridge}.route_localnet=1")
        tag = ["-m", "comment", "--comment", f"ragops test node {self.id}"]
        api_port = self.plane.server.rsplit(":", 1)[1]
        self._rule("-t", "nat", "-A", "PREROUTING", "-i", self.bridge, "-p", "tcp", "-d", KUBERNETES_SERVICE_IP,
                   "--dport", "443", *tag, "-j", "DNAT", "--to-destination", f"127.0.0.1:{api_port}")  # fmt: skip
        self._rule("-t", "nat", "-A", "PREROUTING", "-i", self.bridge, "-p", "tcp", "-d", self.host_address,
                   "!", "--dport", "53", *tag, "-j", "DNAT", "--to-destination", "127.0.0.1")  # fmt: skip
        self._rule("-I", "FORWARD", "-i", self.bridge, "!", "-o", self.bridge, *tag, "-j", "DROP")
        conflist = {
            "cniVersion": "1.0.0",
            "name": f"ragops-{self.id}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.workdir / "ipam"),
                        "ranges": [[{"subnet": str(self.subnet), "gateway": self.host_address}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        net_d = self.workdir / "cni"
        net_d.mkdir(parents=True, exist_ok=True)
        (net_d / "10-ragops.conflist").write_text(json.dumps(conflist, indent=2))

    def _start_dns(self) -> None:
        self.spawn_process(
            "dnsmasq",
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--log-facility=-",
                f"--pid-file={self.workdir / 'dnsmasq.pid'}",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                f"--listen-address={self.host_address}",
                "--except-interface=lo",
                f"--host-record=kubernetes.default.svc.cluster.local,{KUBERNETES_SERVICE_IP}",
                # Every other name: NXDOMAIN, so resolvers walk their search list instead of
                # giving up on the REFUSED a server without upstreams would answer.
                "--address=/#/",
            ],
        )
        self._wait("dnsmasq", lambda: "started" in self.log_tail("dnsmasq"))

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        base.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
[grpc]
  address = "{self.socket}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # The pause container's OOM score adjustment needs CAP_SYS_RESOURCE, which this host withholds.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.workdir / "cni"}"
"""
        (base / "config.toml").write_text(config)
        self.spawn_process("containerd", ["containerd", f"--config={base / 'config.toml'}"])
        answers = ["ctr", f"--address={self.socket}", "version"]
        self._wait("containerd", lambda: _run(*answers, check=False).returncode == 0)

    def _import_images(self) -> None:
        pause = self.workdir / "pause.oci.tar"
        build_pause_archive(pause)
        for archive in (pause, *self.archives):
            self.ctr("images", "import", str(archive))

    def _start_kubelet(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            root.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a v1 cpuset cgroup admits tasks only once it has CPUs and nodes
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (root / knob).write_text((hierarchy / knob).read_text())
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.host_address,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.plane.pki.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "podLogsDir": str(self.workdir / "pod-logs"),
            "clusterDNS": [self.host_address],
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 50,
            "enforceNodeAllocatable": [],
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "registerNode": True,
        }
        config_path = self.workdir / "kubelet.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.spawn_process(
            "kubelet",
            [
                str(TOOLS_BIN / "kubelet"),
                f"--config={config_path}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.host_address}",
                "--node-labels=ragops.dev/test-node=real",
                "--v=1",
            ],
        )
        self._wait("kubelet", self._node_ready, timeout=90)

    def _node_ready(self) -> bool:
        result = self.plane.kubectl(
            "get", "node", self.name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
        )
        return result.stdout.strip() == "True"

    def _drain(self, timeout: float = 60) -> None:
        """Stops every pod on this node through the kubelet, so CRI tears down their sandboxes and
        networks, and waits until containerd runs no container.

        A NoExecute taint first: controllers recreate deleted pods, and the taint keeps the new
        ones off this node (they stay Pending) while its pods are deleted.
        """
        self.plane.kubectl("taint", "node", self.name, "ragops.dev/stopping=true:NoExecute", "--overwrite", check=False)
        listed = self.plane.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={self.name}", "-o", "json")
        for pod in json.loads(listed.stdout)["items"]:
            self.plane.kubectl(
                "delete", "pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"],
                "--grace-period=1", "--wait=false", check=False,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.ctr("tasks", "list", "--quiet").stdout.strip():
                return
            time.sleep(0.5)

    def _kill_shims(self) -> None:
        """containerd's shims outlive containerd by design; this node's carry its socket path."""
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and marker in argv:
                    os.kill(int(proc.name), signal.SIGKILL)

    def _kill_pod_processes(self) -> None:
        """Whatever still runs in this node's cgroups (a pod the drain did not reach): SIGKILL."""
        pids: set[int] = set()
        for hierarchy in _cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            for procs in root.glob("**/cgroup.procs") if root.is_dir() else ():
                with contextlib.suppress(OSError):
                    pids.update(int(pid) for pid in procs.read_text().split())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
            time.sleep(0.1)

    def _remove_pod_networks(self) -> None:
        """Network namespaces containerd pinned for this node's pods, and their veths on its bridge."""
        if self._subnet is None:
            return
        netns = Path("/var/run/netns")
        for name in sorted(path.name for path in netns.iterdir()) if netns.is_dir() else ():
            listed = _run("ip", "netns", "exec", name, "ip", "-json", "-4", "address", "show", check=False).stdout
            links = json.loads(listed or "[]")
            local = [info["local"] for link in links for info in link.get("addr_info", [])]
            if any(ipaddress.ip_address(address) in self.subnet for address in local):
                _run("ip", "netns", "delete", name, check=False)
        veths = json.loads(_run("ip", "-json", "link", "show", "master", self.bridge, check=False).stdout or "[]")
        for veth in veths:
            _run("ip", "link", "delete", veth["ifname"], check=False)

    def _unmount(self) -> None:
        """Unmounts what the kubelet and containerd mounted under the work directory, deepest first."""
        prefix = str(self.workdir.resolve()) + "/"
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if (point + "/").startswith(prefix):
                mounts.append(point)
        for point in sorted(set(mounts), key=len, reverse=True):
            _run("umount", "--lazy", point, check=False)


def build_pause_archive(path: Path) -> Path:
    """An OCI archive of a FROM-scratch image holding .tools/bin/pause, tagged as containerd expects."""
    if path.exists():
        return path
    env = podman_env()
    container = subprocess.run(
        ["buildah", "from", "scratch"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    try:
        for args in (
            ["copy", container, str((TOOLS_BIN / "pause").resolve()), "/pause"],
            ["config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container],
            ["commit", "--quiet", container, PAUSE_IMAGE],
        ):
            subprocess.run(["buildah", *args], capture_output=True, text=True, env=env, check=True)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, env=env, check=False)
    subprocess.run(
        ["podman", "save", "--quiet", "--format", "oci-archive", "--output", str(path), PAUSE_IMAGE],
        capture_output=True,
        env=env,
        check=True,
    )
    return path
