#!/usr/bin/env python3
"""Renders deploy/k8s and checks the manifests agree with the config they ship.

The config is read the way the daemon reads it (`epxd --check-config` prints
the effective one); then a real epxd started with that config (socket and
ports moved to temporary ones) must answer the probes' paths.
"""
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SCHEME = "http"  # the daemon's probe endpoint, on this host

try:
    import yaml
except ImportError:
    print("EPX_TEST_SKIPPED: python3-yaml is missing (tools/setup.sh installs it)")
    sys.exit(0)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)


def runfile(path):
    base = os.environ.get("TEST_SRCDIR")
    if base:
        return os.path.join(base, os.environ.get("TEST_WORKSPACE", "epx"), path)
    return path


epxd = runfile("daemon/epxd")
conf_path = runfile("deploy/k8s/epxd.conf")
rendered = subprocess.run([runfile("deploy/k8s/render.sh"), "example/epxd:test", "epx-test"],
                          check=True, capture_output=True, text=True).stdout
docs = [d for d in yaml.safe_load_all(rendered) if d]
by_kind = {d["kind"]: d for d in docs}
check(set(by_kind) == {"Namespace", "ConfigMap", "DaemonSet"}, "kinds rendered: %s" % sorted(by_kind))
for d in docs:
    check(d["metadata"].get("namespace", d["metadata"]["name"]) == "epx-test", "namespace of " + d["kind"])

# The effective config, as epxd parses it (the Secret's file is not here).
effective = subprocess.run([epxd, "--config", conf_path, "--peer-secret-file", "", "--check-config"],
                           check=True, capture_output=True, text=True).stdout


def field(name):
    m = re.search(r'^%s: "?([^"\n]*)"?$' % name, effective, re.M)
    return m.group(1) if m else ""


socket = field("control_socket")
peer_port = int(field("peer_listen").rsplit(":", 1)[1])
metrics_port = int(field("metrics_listen").rsplit(":", 1)[1])
check(field("require_provider") == "true", "require_provider set for the DaemonSet")
shutdown_ms = int(field("shutdown_timeout_ms"))

cm = by_kind["ConfigMap"]
with open(conf_path) as f:
    check(cm["data"]["epxd.conf"] == f.read(), "ConfigMap epxd.conf is deploy/k8s/epxd.conf verbatim")

ds = by_kind["DaemonSet"]
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
check(c["image"] == "example/epxd:test", "image substituted")
check(pod.get("hostNetwork") is True, "host network")
mounts = {m["name"]: m for m in c["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}

# --config names the file the ConfigMap volume holds.
config_arg = c["args"][c["args"].index("--config") + 1]
config_mount = [m for m in c["volumeMounts"] if "configMap" in volumes[m["name"]]]
check(len(config_mount) == 1 and config_arg == config_mount[0]["mountPath"] + "/epxd.conf",
      "--config %s is the ConfigMap's file" % config_arg)
check(volumes[config_mount[0]["name"]]["configMap"]["name"] == cm["metadata"]["name"], "ConfigMap name")

# The socket's directory is the host's, shared with serving pods.
socket_dir = os.path.dirname(socket)
host = [m for m in c["volumeMounts"] if m["mountPath"] == socket_dir]
check(len(host) == 1, "a mount at the socket's directory %s" % socket_dir)
if host:
    hp = volumes[host[0]["name"]].get("hostPath", {})
    check(hp.get("path") == socket_dir, "hostPath %s for the socket" % socket_dir)
pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
check(pre_stop[pre_stop.index("--socket") + 1] == socket, "preStop drain uses the control socket")
check("drain" in pre_stop, "preStop drains")

# The peer secret's directory is the Secret's mount.
secret_dir = os.path.dirname(re.search(r'^peer_secret_file: "([^"]*)"', open(conf_path).read(), re.M).group(1))
secret = [m for m in c["volumeMounts"] if m["mountPath"] == secret_dir]
check(len(secret) == 1 and "secret" in volumes[secret[0]["name"]], "Secret mounted at %s" % secret_dir)

ports = {p["name"]: p["containerPort"] for p in c["ports"]}
check(ports.get("peer") == peer_port, "peer port %d" % peer_port)
check(ports.get("metrics") == metrics_port, "metrics port %d" % metrics_port)
annotations = ds["spec"]["template"]["metadata"]["annotations"]
check(annotations.get("prometheus.io/port") == str(metrics_port), "scrape annotation port")
probes = {}
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    get = c[probe]["httpGet"]
    check(get["port"] == metrics_port, "%s on the metrics port" % probe)
    probes[probe] = get["path"]
check(probes["livenessProbe"] == "/healthz" and probes["readinessProbe"] == "/readyz", "probe paths %s" % probes)
check("IPC_LOCK" in c["securityContext"]["capabilities"]["add"], "IPC_LOCK")
check("vpc.amazonaws.com/efa" in c["resources"]["limits"], "the EFA device plugin's resource")
env = {e["name"]: e.get("value") for e in c["env"]}
check(env.get("NVIDIA_VISIBLE_DEVICES") == "all", "NVIDIA device nodes through the container runtime")
check(pod["terminationGracePeriodSeconds"] * 1000 > shutdown_ms + 30000,
      "grace period covers the preStop drain and shutdown_timeout_ms")

# The probe paths are what a daemon with this config serves.
with tempfile.TemporaryDirectory(prefix="epx-k8s-", dir="/tmp") as tmp:
    log_path = os.path.join(tmp, "epxd.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([epxd, "--config", conf_path, "--peer-secret-file", "", "--node-name", "k8s-test",
                                 "--control-socket", tmp + "/epxd.sock", "--socket-group", "",
                                 "--peer-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                                 "--provider", "tcp", "--rail-domains", "lo", "--log-format", "text"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        deadline = time.time() + 20
        while time.time() < deadline and port is None and proc.poll() is None:
            m = re.search(r"metrics endpoint: .*\(port (\d+)\)", open(log_path).read())
            port = int(m.group(1)) if m else None
            time.sleep(0.1)
        check(port is not None, "epxd started with the DaemonSet's config:\n" + open(log_path).read())
        for probe, path in sorted(probes.items()):
            try:
                code = urllib.request.urlopen("%s://127.0.0.1:%d%s" % (SCHEME, port, path), timeout=5).status
            except urllib.error.HTTPError as e:
                code = e.code
            except Exception as e:  # noqa: BLE001: any failure to answer fails the check
                code = str(e)
            check(code == 200, "%s %s answers 200 (got %s)" % (probe, path, code))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

if failures:
    print("%d check(s) failed" % len(failures))
    sys.exit(1)
print("PASS: deploy/k8s agrees with its epxd.conf")
