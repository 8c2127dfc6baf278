#!/usr/bin/env python3
"""The operator at scale, and over a long run: driven by hack/bench-scale.sh (see there).

    bench-scale.py scale BIN KUBECONFIG   N keys created, then all rotated; one markdown report
    bench-soak.py soak BIN KUBECONFIG     a few keys rotating every few seconds; RSS every minute

The client talks to the apiserver directly over HTTPS with a pool of threads, each with its own
keep-alive connection, so the client is not what is measured (kubectl apply of 1,000 objects
takes minutes). Writes are counted from the apiserver's own apiserver_request_total.
"""
import base64
import concurrent.futures
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

GROUP = "jwks-operator.io/v1alpha1"
MUTATING = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
LABEL = "jwks-operator.io/publication"


def say(*args):
    print("[bench-scale]", *args, file=sys.stderr, flush=True)


class Api:
    """A small apiserver client: one keep-alive HTTPS connection per thread."""

    def __init__(self, kubeconfig):
        config = json.loads(subprocess.check_output(["python3", "-c", YAML_TO_JSON, kubeconfig]))
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port
        self.dir = tempfile.mkdtemp(prefix="bench-scale-")
        files = {}
        for name, field, data in (("ca", "certificate-authority-data", cluster),
                                  ("crt", "client-certificate-data", user),
                                  ("key", "client-key-data", user)):
            files[name] = os.path.join(self.dir, name)
            with open(files[name], "wb") as f:
                f.write(base64.b64decode(data[field]))
        self.context = ssl.create_default_context(cafile=files["ca"])
        self.context.load_cert_chain(files["crt"], files["key"])
        self.local = threading.local()

    def request(self, method, path, body=None, content_type="application/json"):
        for attempt in range(5):
            connection = getattr(self.local, "connection", None)
            if connection is None:
                connection = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                                         timeout=60)
                self.local.connection = connection
            try:
                headers = {"Content-Type": content_type, "Accept": "application/json"}
                data = None if body is None else json.dumps(body).encode()
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException):
                self.local.connection = None
                connection.close()
                time.sleep(0.2 * (attempt + 1))
                continue
            if response.status == 429 or response.status >= 500:
                time.sleep(0.2 * (attempt + 1))
                continue
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {text[:300]!r}")
            return json.loads(text) if text.startswith(b"{") else text.decode()
        raise RuntimeError(f"{method} {path}: no answer after retries")

    def metrics(self):
        """apiserver_request_total's mutating requests, by resource/subresource."""
        counts = {}
        for line in self.request("GET", "/metrics").splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") not in MUTATING:
                continue
            name = labels.get("resource", "")
            if labels.get("subresource"):
                name += "/" + labels["subresource"]
            counts[name] = counts.get(name, 0) + float(line.rsplit(" ", 1)[1])
        return counts


YAML_TO_JSON = """
import json, sys
# The control plane's kubeconfig is a fixed, flat YAML (hack/control-plane/start.sh): parse
# just that shape rather than depend on a YAML package.
lines = open(sys.argv[1]).read().splitlines()
out = {"clusters": [{"cluster": {}}], "users": [{"user": {}}]}
section = None
for line in lines:
    s = line.strip()
    if line.startswith("clusters:"): section = out["clusters"][0]["cluster"]
    elif line.startswith("users:"): section = out["users"][0]["user"]
    elif line.startswith("contexts:"): section = None
    elif section is not None and ":" in s and not s.startswith("- name") and s not in ("cluster:", "user:"):
        k, v = s.split(":", 1)
        section[k.strip()] = v.strip()
print(json.dumps(out))
"""


def parallel(function, items, threads):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(function, items):
            pass


class Process:
    """/proc figures of the operator: peak and current RSS, CPU seconds."""

    def __init__(self, pid):
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def status(self, field):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # MiB
        return 0.0

    def cpu(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def threads(self):
        return len(os.listdir(f"/proc/{self.pid}/task"))


def load():
    return open("/proc/loadavg").read().split()[0:3]


def start_operator(binary, kubeconfig, namespace, log_path):
    env = dict(os.environ, KUBECONFIG=kubeconfig, RUST_LOG="info")
    log = open(log_path, "w")
    wrapper = os.environ.get("BENCH_WRAPPER", "").split()
    return subprocess.Popen(wrapper + [binary, "run", "--namespace", namespace, "--log-format", "json"],
                            stdout=log, stderr=log, env=env)


def create_namespace(api, name):
    api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name}})


def key_path(namespace, name=""):
    return f"/apis/{GROUP}/namespaces/{namespace}/signingkeys" + (f"/{name}" if name else "")


def publication_path(namespace):
    return f"/apis/{GROUP}/namespaces/{namespace}/jwkspublications"


def key_object(index, publications, rotation):
    return {
        "apiVersion": GROUP, "kind": "SigningKey",
        "metadata": {"name": f"key-{index:05d}", "labels": {LABEL: f"p{index % publications}"}},
        "spec": {"algorithm": "ES256", **({"rotation": rotation} if rotation else {})},
    }


def publication_object(index):
    return {
        "apiVersion": GROUP, "kind": "JwksPublication",
        "metadata": {"name": f"p{index}"},
        "spec": {"selector": {"matchLabels": {LABEL: f"p{index}"}}, "server": {"enabled": False}},
    }


def ready(key):
    conditions = (key.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def progress(api, namespace, want):
    """How many keys satisfy `want(key, published kids of its publication)`."""
    keys = api.request("GET", key_path(namespace))["items"]
    published = {}
    for p in api.request("GET", publication_path(namespace))["items"]:
        published[p["metadata"]["name"]] = {k["kid"] for k in (p.get("status") or {}).get("keys") or []}
    return sum(1 for k in keys if want(k, published.get(k["metadata"]["labels"][LABEL], set())))


def created_and_published(key, published):
    status = key.get("status") or {}
    return ready(key) and status.get("activeKid") in published


def rotated_and_published(key, published):
    pending = [k["kid"] for k in (key.get("status") or {}).get("keys") or [] if k["state"] == "Pending"]
    return bool(pending) and all(kid in published for kid in pending)


def wait_for(api, namespace, n, want, process, deadline_s, label):
    started = time.time()
    peak = 0.0
    last_report = 0.0
    while True:
        done = progress(api, namespace, want)
        peak = max(peak, process.status("VmHWM"))
        now = time.time()
        if done >= n:
            return now
        if now - last_report > 10:
            say(f"{label}: {done}/{n} after {now - started:.0f} s; RSS {process.status('VmRSS'):.1f} MiB")
            last_report = now
        if now - started > deadline_s:
            raise RuntimeError(f"{label}: only {done}/{n} after {deadline_s} s")
        time.sleep(0.5)


def delta(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0) > 0}


# The operator's writes: the client writes SigningKeys and JwksPublications (the main resource);
# the controller-manager, not the operator, writes the rest of what the apiserver counts.
OPERATOR_RESOURCES = ["secrets", "signingkeys/status", "events", "configmaps", "jwkspublications/status",
                      "deployments", "services"]


def write_rows(writes, n):
    total = sum(writes.get(r, 0) for r in OPERATOR_RESOURCES)
    parts = [f"{r} {writes[r] / n:.2f}" for r in OPERATOR_RESOURCES if writes.get(r)]
    return ", ".join(parts), total / n


def baseline(api, n, threads):
    """The apiserver alone: N Secrets like the operator's, N SigningKeys and N status patches."""
    namespace = "bench-baseline"
    create_namespace(api, namespace)
    payload = base64.b64encode(os.urandom(1200)).decode()
    rows = []

    def secret(i):
        api.request("POST", f"/api/v1/namespaces/{namespace}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s-{i:05d}"},
            "data": {"keyring": payload, "key.pem": payload[:300], "key.jwk": payload[:400]}})

    def key(i):
        api.request("POST", key_path(namespace), key_object(i, 10, None))

    def status(i):
        api.request("PATCH", key_path(namespace, f"key-{i:05d}") + "/status", {"status": {
            "activeKid": f"kid-{i}", "keys": [{"kid": f"kid-{i}", "state": "Active",
                                               "createdAt": "2026-01-01T00:00:00.000000Z",
                                               "publicJwk": {"kty": "EC", "x": payload[:43], "y": payload[43:86]}}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KeyActive", "message": "m",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
            "application/merge-patch+json")

    for label, function in (("Secrets created", secret), ("SigningKeys created", key),
                            ("SigningKey status patches", status)):
        started = time.time()
        parallel(function, range(n), threads)
        rows.append((label, time.time() - started))
    # Kept: deleting it now would make the namespace controller's deletions count as writes.
    return rows


def scale(binary, kubeconfig, work):
    n = int(os.environ.get("BENCH_KEYS", "1000"))
    publications = int(os.environ.get("BENCH_PUBLICATIONS", "10"))
    threads = int(os.environ.get("BENCH_CLIENTS", "32"))
    timeout = int(os.environ.get("BENCH_TIMEOUT", "900"))
    api = Api(kubeconfig)
    report = []
    say(f"baseline: {n} Secrets, SigningKeys and status patches with no operator, {threads} client threads")
    base = baseline(api, n, threads)
    namespace = "bench"
    create_namespace(api, namespace)
    time.sleep(2)  # the namespace's ServiceAccount and root CA ConfigMap, before counting
    operator = start_operator(binary, kubeconfig, namespace, os.path.join(work, "operator.log"))
    process = Process(operator.pid)
    try:
        time.sleep(2)
        idle_rss = process.status("VmRSS")
        for i in range(publications):
            api.request("POST", publication_path(namespace), publication_object(i))
        time.sleep(2)
        before = api.metrics()
        cpu0 = process.cpu()
        load_before = load()
        say(f"creating {n} SigningKeys in {publications} publications")
        started = time.time()
        parallel(lambda i: api.request("POST", key_path(namespace), key_object(i, publications, None)),
                 range(n), threads)
        accepted = time.time()
        try:
            done = wait_for(api, namespace, n, created_and_published, process, timeout, "create")
        except RuntimeError as unfinished:
            say(str(unfinished))
            done = float("nan")
        time.sleep(5)  # writes that trail the last key (publication status, events)
        after = api.metrics()
        create = {
            "client": accepted - started, "ready": done - started, "after_last": done - accepted,
            "writes": delta(after, before), "hwm": process.status("VmHWM"),
            "rss": process.status("VmRSS"), "cpu": process.cpu() - cpu0, "load": load_before + ["→"] + load(),
            "threads": process.threads(),
        }
        say(f"rotating all {n} keys")
        before, cpu0, load_before = after, process.cpu(), load()
        started = time.time()
        stamp = str(int(started))
        parallel(lambda i: api.request(
            "PATCH", key_path(namespace, f"key-{i:05d}"),
            {"metadata": {"annotations": {"jwks-operator.io/rotate": stamp}}},
            "application/merge-patch+json"), range(n), threads)
        accepted = time.time()
        try:
            done = wait_for(api, namespace, n, rotated_and_published, process, timeout, "rotate")
        except RuntimeError as unfinished:
            # Still report what was measured; the seconds read "nan".
            say(str(unfinished))
            done = float("nan")
        time.sleep(5)
        after = api.metrics()
        rotate = {
            "client": accepted - started, "ready": done - started, "after_last": done - accepted,
            "writes": delta(after, before), "hwm": process.status("VmHWM"),
            "rss": process.status("VmRSS"), "cpu": process.cpu() - cpu0, "load": load_before + ["→"] + load(),
            "threads": process.threads(),
        }
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)
    report.append(f"{n} ES256 SigningKeys in {publications} JwksPublications (server disabled), "
                  f"{threads} client threads; operator idle RSS {idle_rss:.1f} MiB.")
    report.append("")
    report.append("| figure | create | rotate all |")
    report.append("|---|---|---|")
    report.append(f"| client: all requests accepted | {create['client']:.1f} s | {rotate['client']:.1f} s |")
    report.append(f"| every key Ready and published / next key pending and published | "
                  f"{create['ready']:.1f} s ({create['after_last']:.1f} s after the last request) | "
                  f"{rotate['ready']:.1f} s ({rotate['after_last']:.1f} s after the last request) |")
    c_rows, c_total = write_rows(create["writes"], n)
    r_rows, r_total = write_rows(rotate["writes"], n)
    report.append(f"| operator writes per key | {c_rows} → **{c_total:.2f}** | {r_rows} → **{r_total:.2f}** |")
    report.append(f"| operator peak RSS (VmHWM, cumulative) | **{create['hwm']:.1f} MiB** | **{rotate['hwm']:.1f} MiB** |")
    report.append(f"| operator RSS at the end | {create['rss']:.1f} MiB | {rotate['rss']:.1f} MiB |")
    report.append(f"| operator CPU | {create['cpu']:.1f} s | {rotate['cpu']:.1f} s |")
    report.append(f"| operator threads | {create['threads']} | {rotate['threads']} |")
    report.append(f"| load average (1, 5, 15 min) before → after | {' '.join(create['load'])} | {' '.join(rotate['load'])} |")
    report.append("")
    report.append(f"All mutating requests in each phase (apiserver_request_total): create {json.dumps(create['writes'])}; "
                  f"rotate {json.dumps(rotate['writes'])}.")
    report.append("")
    report.append(f"The apiserver alone (no operator), {n} requests from {threads} client threads:")
    report.append("")
    report.append("| requests | seconds | per second |")
    report.append("|---|---|---|")
    for label, seconds in base:
        report.append(f"| {n} {label} | {seconds:.1f} | {n / seconds:.0f} |")
    print("\n".join(report))


def soak(binary, kubeconfig, work):
    keys = int(os.environ.get("BENCH_SOAK_KEYS", "5"))
    interval = os.environ.get("BENCH_SOAK_INTERVAL", "4s")
    minutes = int(os.environ.get("BENCH_SOAK_MINUTES", "30"))
    api = Api(kubeconfig)
    namespace = "soak"
    create_namespace(api, namespace)
    log_path = os.path.join(work, "operator.log")
    operator = start_operator(binary, kubeconfig, namespace, log_path)
    process = Process(operator.pid)
    rotation = {"interval": interval, "prePublish": "1s", "gracePeriod": "1s"}
    api.request("POST", publication_path(namespace), publication_object(0))
    for i in range(keys):
        api.request("POST", key_path(namespace), key_object(i, 1, rotation))
    print(f"{keys} EdDSA/ES256 keys rotating every {interval} (prePublish 1s, gracePeriod 1s), "
          f"one publication; RSS sampled every minute.")
    print()
    print("| minute | ring changes | RSS (VmRSS) | peak (VmHWM) | RssAnon | CPU s | load |")
    print("|---|---|---|---|---|---|---|")
    started = time.time()
    try:
        for minute in range(minutes + 1):
            while time.time() < started + 60 * minute:
                time.sleep(1)
                if operator.poll() is not None:
                    raise RuntimeError("operator exited")
            with open(log_path) as f:
                changes = sum(1 for line in f if "key ring changed" in line)
            print(f"| {minute} | {changes} | {process.status('VmRSS'):.1f} MiB | {process.status('VmHWM'):.1f} MiB "
                  f"| {process.status('RssAnon'):.1f} MiB | {process.cpu():.1f} | {' '.join(load())} |", flush=True)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)


if __name__ == "__main__":
    # A SIGTERM (the caller stopping early) still runs the finally blocks that stop the operator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command, binary, kubeconfig, work = sys.argv[1:5]
    {"scale": scale, "soak": soak}[command](binary, kubeconfig, work)
