#!/usr/bin/env python3
"""Structural check of rendered Kubernetes manifests (kubectl kustomize output).

Usage: k8s_manifests_check.py RENDERED.yaml [--dockerfile=PATH] [--rules=PATH]
                                             [--flagfile-out=PATH] [--fleet] [--postgres]
       k8s_manifests_check.py RENDERED.yaml --self-test [--rules=PATH] [--fleet] [--postgres]

Asserts what a cluster would only reveal at run time: that the probes, ports,
volumes, grace period and monitoring objects agree with the flags mantissad
actually gets from its ConfigMap, and with the image the Dockerfile builds;
that the database URI comes from a Secret and one shared volume holds
--state_dir. --fleet: more than one worker, on a ReadWriteMany volume.
--postgres: the rendering holds the PostgreSQL server that the Secret's URI
names. Prints one line per failed assertion and exits 1 if there is any.
With --flagfile-out, writes the ConfigMap's flagfile there, for the caller to
hand to the real mantissad. --self-test breaks RENDERED.yaml in the ways listed
in MUTATIONS (with --fleet) and POSTGRES_MUTATIONS (with --postgres), one at a
time, and passes only if each is caught.
"""

import base64
import copy
import os
import re
import sys
import urllib.parse

import yaml

# Seconds the daemon may need after the drain to stop running jobs (within
# one training step), write their checkpoints to the shared volume and
# release them, and to close the server (3 s for open calls, main.cc).
CHECKPOINT_BUDGET_S = 60
SERVER_SHUTDOWN_S = 3
# `--database=$(VAR)`: Kubernetes expands VAR from the container's env.
DATABASE_ARG = re.compile(r"--database=\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# `--advertise_address=$(VAR)`, VAR the pod IP: where the other workers of a
# job over several nodes reach this worker's ranks.
ADVERTISE_ARG = re.compile(r"--advertise_address=\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Ports a non-root rank may listen on: the kernel picks them from the pod's
# net.ipv4.ip_local_port_range, which the manifests leave to the node.
RANK_PORTS = (1024, 65535)
POSTGRES_URI = re.compile(r"postgres(ql)?://")

errors = []


def check(condition, message):
    if not condition:
        errors.append(message)
    return condition


def parse_quantity(q):
    """CPU or memory quantity -> float (cores or bytes)."""
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", q)
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def parse_flags(text):
    """An absl flagfile: one --name=value per line, '#' comments."""
    flags = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"--([a-z_0-9]+)=(.*)", line)
        if check(m, f"flagfile: line {line!r} is not --name=value"):
            flags[m.group(1)] = m.group(2)
    return flags


def host_port(flags, name):
    value = flags.get(name, "")
    m = re.fullmatch(r"(.+):([0-9]+)", value)
    if not check(m, f"--{name}: {value!r} is not HOST:PORT"):
        return None, None
    return m.group(1), int(m.group(2))


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container, target):
    """A Service targetPort (name or number) -> the container's port number."""
    for p in container.get("ports", []):
        if p.get("name") == target or p.get("containerPort") == target:
            return p["containerPort"]
    return None


def check_probe(kind, probe, probe_port, probe_flag):
    if not check(probe, f"{kind}: missing"):
        return None
    check("grpc" in probe and not any(k in probe for k in ("httpGet", "tcpSocket", "exec")),
          f"{kind}: must be a native gRPC probe (grpc.health.v1), got {sorted(probe)}")
    grpc = probe.get("grpc") or {}
    check(grpc.get("port") == probe_port,
          f"{kind}: probes port {grpc.get('port')}, --{probe_flag} port is {probe_port}")
    # "" is the server as a whole: NOT_SERVING while loading and draining.
    check(grpc.get("service", "") == "",
          f"{kind}: service {grpc.get('service')!r}; the daemon reports starting and "
          "draining on the server as a whole, \"\"")
    period = probe.get("periodSeconds", 10)
    threshold = probe.get("failureThreshold", 3)
    check(probe.get("timeoutSeconds", 1) < period,
          f"{kind}: timeoutSeconds must be below periodSeconds")
    return period * threshold


def check_database_env(c, var):
    """--database=$(var): var and PGPASSWORD come from Secret keys. Returns
    var's secretKeyRef, or None."""
    env = {e["name"]: e for e in c.get("env", [])}
    refs = {}
    for name in (var, "PGPASSWORD"):
        if name not in env:
            check(name == "PGPASSWORD", f"--database=$({var}): the container has no env {var}")
            continue
        ref = (env[name].get("valueFrom") or {}).get("secretKeyRef") or {}
        if check(ref.get("name") and ref.get("key") and "value" not in env[name],
                 f"env {name} must come from a Secret (valueFrom.secretKeyRef): it carries "
                 "the database's credentials"):
            refs[name] = ref
    for e in c.get("env", []):
        check(not POSTGRES_URI.search(str(e.get("value", ""))),
              f"env {e['name']} holds a database URI in the pod spec; use a Secret")
    return refs.get(var)


def check_advertise(c, args):
    """--advertise_address=$(VAR) once, after --flagfile, with VAR the pod IP
    from the downward API."""
    given = [a for a in args if a.startswith("--advertise_address=")]
    if not check(given, "args need --advertise_address=$(POD_IP), POD_IP from the downward API "
                 "(fieldRef status.podIP): with the default 127.0.0.1 the other nodes of a job "
                 "with num_nodes > 1 cannot reach its ranks"):
        return
    m = ADVERTISE_ARG.fullmatch(given[-1])
    if not check(len(given) == 1 and m, f"{given}: --advertise_address must be given once, as "
                 "$(ENV_VAR) of the pod IP; a literal is the same for every replica"):
        return
    env = {e["name"]: e for e in c.get("env", [])}
    var = m.group(1)
    if not check(var in env, f"--advertise_address=$({var}): the container has no env {var}"):
        return
    field = ((env[var].get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
    check(field == "status.podIP" and "value" not in env[var],
          f"env {var} (--advertise_address) must come from the downward API, fieldRef "
          f"status.podIP, got {env[var]}")


def _is_worker_peer(peer, selector, pod_labels):
    """A NetworkPolicy peer that selects the worker pods of this namespace
    only: a podSelector alone, holding the policy's own matchLabels."""
    if set(peer) != {"podSelector"}:
        return False  # a namespaceSelector or ipBlock reaches beyond them
    sel = peer["podSelector"] or {}
    labels = sel.get("matchLabels") or {}
    return (set(sel) == {"matchLabels"} and labels_match(labels, pod_labels)
            and all(labels.get(k) == v for k, v in selector.items()))


def check_worker_rule(rule, selector, pod_labels):
    """An ingress rule admitting the workers from each other on the ranks'
    ephemeral ports. Returns the (first, last) port ranges it admits."""
    peers = rule.get("from") or []
    wide = [p for p in peers if not _is_worker_peer(p, selector, pod_labels)]
    check(not wide, f"NetworkPolicy: the rule on the ranks' ports admits {wide}; only the worker "
          f"pods themselves (podSelector {selector}, no namespaceSelector or ipBlock)")
    ranges = []
    for p in rule.get("ports") or []:
        first, last = p.get("port"), p.get("endPort", p.get("port"))
        check(p.get("protocol", "TCP") == "TCP",
              f"NetworkPolicy: the ranks' ports are TCP, not {p.get('protocol')}")
        if check(isinstance(first, int) and isinstance(last, int) and first <= last,
                 f"NetworkPolicy: worker ports {p} must be numbers with endPort >= port"):
            ranges.append((first, last))
    return ranges


def check_state_claim(by_kind, volume, replicas, opts):
    claim_name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if not check(claim_name, "--state_dir must be one shared PersistentVolumeClaim (a "
                 "volumeClaimTemplate gives each worker its own, and a job could not "
                 "resume on another)"):
        return
    claims = [d for d in by_kind.get("PersistentVolumeClaim", [])
              if d["metadata"]["name"] == claim_name]
    if not check(claims, f"--state_dir's claim {claim_name} is not rendered"):
        return
    spec = claims[0]["spec"]
    modes = spec.get("accessModes", [])
    check(spec.get("resources", {}).get("requests", {}).get("storage"),
          "state PVC requests no storage")
    if opts.get("fleet") is not None:
        check(modes == ["ReadWriteMany"], f"state PVC is {modes}: workers on different "
              "nodes share it, so it must be ReadWriteMany")
    elif replicas > 1:
        # ReadWriteOnce is per node: workers on the volume's node share it.
        check("ReadWriteOncePod" not in modes,
              f"state PVC is {modes}, but {replicas} workers mount it")


def _secret_value(secret, key):
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    if key in secret.get("data", {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def _env_values(container):
    """The container's env: values, and secretKeyRefs as (secret, name, key)."""
    out = {}
    for e in container.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            out[e["name"]] = ("secret", ref.get("name"), ref.get("key"))
        else:
            out[e["name"]] = e.get("value")
    return out


def check_postgres(by_kind, ref, worker):
    """The Secret's URI names a rendered PostgreSQL Service, whose pods run a
    server initialised with the URI's role, database and password."""
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    secret = secrets.get(ref["name"])
    if not check(secret, f"Secret {ref['name']} (the database URI) is not rendered"):
        return
    uri = _secret_value(secret, ref["key"]) or ""
    parsed = urllib.parse.urlsplit(uri)
    if not check(parsed.scheme in ("postgresql", "postgres") and parsed.hostname,
                 f"Secret {ref['name']} key {ref['key']}: {uri!r} is no postgresql://HOST URI"):
        return
    check(parsed.password is None, f"Secret {ref['name']}: the URI carries the password; put it "
          "in the key PGPASSWORD reads, so it is on no command line")
    services = [s for s in by_kind.get("Service", [])
                if s["metadata"]["name"] == parsed.hostname.split(".")[0]]
    if not check(services, f"the database URI names host {parsed.hostname}, which is no "
                 "rendered Service"):
        return
    port = parsed.port or 5432
    svc_ports = [p for p in services[0]["spec"].get("ports", []) if p["port"] == port]
    if not check(svc_ports, f"Service {parsed.hostname} has no port {port}"):
        return
    servers = [(w, c) for kind in ("Deployment", "StatefulSet") for w in by_kind.get(kind, [])
               for c in w["spec"]["template"]["spec"]["containers"]
               if c.get("image", "").split("/")[-1].startswith("postgres:")
               and labels_match(services[0]["spec"].get("selector"),
                                w["spec"]["template"]["metadata"].get("labels", {}))]
    if not check(len(servers) == 1, f"Service {parsed.hostname} selects {len(servers)} "
                 "PostgreSQL pods' templates, expected one"):
        return
    server, c = servers[0]
    check(server["spec"].get("replicas", 1) == 1, "the PostgreSQL server must be one replica")
    target = svc_ports[0].get("targetPort", port)
    check(container_port(c, target) == 5432,
          f"Service {parsed.hostname} port {port} does not reach the server's 5432")
    env = _env_values(c)
    user = urllib.parse.unquote(parsed.username or "")
    database = parsed.path.lstrip("/") or user
    check(env.get("POSTGRES_USER") == user,
          f"the URI's role {user!r} is not the server's POSTGRES_USER {env.get('POSTGRES_USER')!r}")
    check(env.get("POSTGRES_DB", env.get("POSTGRES_USER")) == database,
          f"the URI's database {database!r} is not the server's POSTGRES_DB")
    password = env.get("POSTGRES_PASSWORD")
    worker_password = _env_values(worker).get("PGPASSWORD")
    check(isinstance(password, tuple) and password == worker_password,
          f"the server's POSTGRES_PASSWORD ({password}) and the workers' PGPASSWORD "
          f"({worker_password}) must be the same Secret key")
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].startswith(
        "/var/lib/postgresql")]
    vols = {v["name"]: v for v in server["spec"]["template"]["spec"].get("volumes", [])}
    claim_templates = [t["metadata"]["name"] for t in server["spec"].get("volumeClaimTemplates", [])]
    check(mounts and (mounts[0]["name"] in claim_templates
                      or vols.get(mounts[0]["name"], {}).get("persistentVolumeClaim")),
          "the PostgreSQL data directory must be on a PersistentVolumeClaim")


def run_checks(docs, opts):
    """Appends to errors; returns early where later checks would only crash."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("StatefulSet", "ConfigMap", "ServiceMonitor", "PodDisruptionBudget"):
        check(len(by_kind.get(kind, [])) == 1,
              f"expected one {kind}, got {len(by_kind.get(kind, []))}")
    if errors:
        return
    sts = by_kind["StatefulSet"][0]
    pod = sts["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    check(labels_match(sts["spec"]["selector"].get("matchLabels"), pod_labels),
          "StatefulSet selector does not match its pod labels")
    containers = [c for c in spec["containers"] if c["name"] == "mantissad"]
    if not check(len(containers) == 1, "no container named mantissad"):
        return
    c = containers[0]

    # --- The flags: the ConfigMap file that --flagfile names, mounted there,
    # then the database URI from a Secret.
    check(c.get("command") == ["mantissad"], f"command is {c.get('command')}, not [mantissad]")
    # Later arguments win over the flagfile's, so --flagfile comes first.
    args = c.get("args", [])
    database = [a for a in args[1:] if DATABASE_ARG.fullmatch(a)]
    if not check(args and args[0].startswith("--flagfile=") and len(database) == 1
                 and all(a in database or a.startswith("--advertise_address=")
                         for a in args[1:]),
                 "args must be --flagfile=PATH, --database=$(ENV_VAR) and "
                 f"--advertise_address=$(ENV_VAR), got {args}"):
        return
    flagfile = args[0].split("=", 1)[1]
    database_ref = check_database_env(c, DATABASE_ARG.fullmatch(database[0]).group(1))
    check_advertise(c, args[1:])
    mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    flag_dir = os.path.dirname(flagfile)
    mount = mounts.get(flag_dir)
    if not check(mount, f"--flagfile={flagfile}: nothing is mounted at {flag_dir}"):
        return
    check(mount.get("readOnly") is True, "the flags volume must be mounted readOnly")
    cm_name = (volumes.get(mount["name"], {}).get("configMap") or {}).get("name")
    cms = [d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == cm_name]
    if not check(cms, f"volume {mount['name']} names ConfigMap {cm_name}, which is not rendered"):
        return
    flag_text = cms[0].get("data", {}).get(os.path.basename(flagfile))
    if not check(flag_text, f"ConfigMap {cm_name} has no key {os.path.basename(flagfile)}"):
        return
    if "flagfile-out" in opts:
        with open(opts["flagfile-out"], "w") as f:
            f.write(flag_text)
    flags = parse_flags(flag_text)
    check("database" not in flags and not POSTGRES_URI.search(flag_text),
          "the ConfigMap names a database: --database and its credentials belong in a Secret")
    check("worker_id" not in flags, "--worker_id in the ConfigMap gives every replica the same "
          "id; leave it to its default, which is unique per process")
    check("advertise_address" not in flags, "--advertise_address in the ConfigMap gives every "
          "replica the same address; it is the pod IP, in the container's args")
    lease = flags.get("lease_seconds", "")
    check(lease.isdigit() and int(lease) > 0, f"--lease_seconds must be set to a positive "
          f"number of seconds, got {lease!r}")

    grpc_host, grpc_port = host_port(flags, "grpc_address")
    metrics_host, metrics_port = host_port(flags, "metrics_address")
    http_host, http_port = host_port(flags, "http_address")
    check(grpc_host == "0.0.0.0", f"--grpc_address must bind 0.0.0.0 in a pod, got {grpc_host}")
    check(http_host == "0.0.0.0", f"--http_address must bind 0.0.0.0 in a pod, got {http_host}")
    check(metrics_host == "0.0.0.0",
          f"--metrics_address must bind 0.0.0.0 in a pod, got {metrics_host}")
    # --- Transport security: TLS on the pod's addresses, tokens, and the files
    # they name mounted read-only from Secrets.
    tls = bool(flags.get("tls_cert_file"))
    check(tls and flags.get("tls_key_file"), "--tls_cert_file and --tls_key_file must be set: "
          "the daemon binds 0.0.0.0, where plaintext needs --allow_insecure")
    check(flags.get("allow_insecure", "false") in ("false", "0"),
          "--allow_insecure must not be set in a pod")
    check(flags.get("auth_tokens_file"), "--auth_tokens_file must be set: without it every "
          "call is open to whoever reaches the port")
    health_host, health_port = (None, None)
    if check(flags.get("health_address"), "--health_address must be set: Kubernetes' gRPC "
             "probes speak plaintext and cannot reach a TLS port"):
        health_host, health_port = host_port(flags, "health_address")
    drain = int(flags.get("drain_seconds", "0"))
    check(drain > 0, "--drain_seconds must be > 0 so readiness drops before the daemon stops")
    state_dir = os.path.normpath(flags.get("state_dir", "./mantissa-state"))
    check(os.path.isabs(state_dir), f"--state_dir {state_dir} must be absolute")
    device = flags.get("device", "auto")

    # --- Ports: named container ports carry the flags' ports.
    check(container_port(c, "grpc") == grpc_port,
          f"container port 'grpc' is {container_port(c, 'grpc')}, flags say {grpc_port}")
    check(container_port(c, "metrics") == metrics_port,
          f"container port 'metrics' is {container_port(c, 'metrics')}, flags say {metrics_port}")
    check(container_port(c, "http") == http_port,
          f"container port 'http' is {container_port(c, 'http')}, flags say {http_port}")

    if health_port is not None:
        check(container_port(c, "health") == health_port,
              f"container port 'health' is {container_port(c, 'health')}, flags say {health_port}")
    for flag in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_tokens_file"):
        path = flags.get(flag)
        if not path:
            continue
        mount = mounts.get(os.path.dirname(path))
        if check(mount, f"--{flag}={path}: nothing is mounted at {os.path.dirname(path)}"):
            check(mount.get("readOnly") is True, f"--{flag}: its volume must be readOnly")
            check("secret" in volumes.get(mount["name"], {}),
                  f"--{flag}: volume {mount['name']} must be a Secret")

    # --- Probes: native gRPC health on the plaintext health port (or the gRPC
    # port without TLS), consistent with the drain.
    probe_port, probe_flag = ((health_port, "health_address") if health_port is not None
                              else (grpc_port, "grpc_address"))
    startup = check_probe("startupProbe", c.get("startupProbe"), probe_port, probe_flag)
    readiness = check_probe("readinessProbe", c.get("readinessProbe"), probe_port, probe_flag)
    liveness = check_probe("livenessProbe", c.get("livenessProbe"), probe_port, probe_flag)
    if readiness is not None:
        check(readiness <= drain, f"readiness takes {readiness} s to see NOT_SERVING, longer "
              f"than --drain_seconds={drain}: traffic would still arrive after the drain")
    if liveness is not None:
        check(liveness > drain + SERVER_SHUTDOWN_S,
              f"liveness fails after {liveness} s of NOT_SERVING; the drain alone takes {drain} s")
    if startup is not None:
        check(startup >= 120, f"startupProbe allows only {startup} s for the repository load")

    # --- Graceful termination matches the daemon's SIGTERM handling.
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace > drain + CHECKPOINT_BUDGET_S + SERVER_SHUTDOWN_S,
          f"terminationGracePeriodSeconds {grace} <= drain {drain} + checkpoint and release "
          f"{CHECKPOINT_BUDGET_S} + server shutdown {SERVER_SHUTDOWN_S}")

    # --- Non-root, read-only root, no privileges.
    psc = spec.get("securityContext", {})
    csc = c.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "runAsNonRoot is not true")
    check(isinstance(uid, int) and uid > 0, f"runAsUser must be a non-zero uid, got {uid}")
    check(isinstance(psc.get("fsGroup"), int), "pod fsGroup must be set (state volume ownership)")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
    check(seccomp.get("type") == "RuntimeDefault", "seccompProfile must be RuntimeDefault")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")

    # --- --state_dir is one PersistentVolumeClaim that every worker mounts
    # writable: a job resumes on another worker from the checkpoint there.
    replicas = sts["spec"].get("replicas", 1)
    state_mount = mounts.get(state_dir)
    if check(state_mount, f"nothing is mounted at --state_dir={state_dir}"):
        check(not state_mount.get("readOnly"), "the state volume is mounted readOnly")
        check_state_claim(by_kind, volumes.get(state_mount["name"], {}), replicas, opts)
    if opts.get("fleet") is not None:
        check(replicas > 1, f"replicas is {replicas}: a fleet runs more than one worker")
    if opts.get("postgres") is not None and database_ref:
        check_postgres(by_kind, database_ref, c)
    tmp = mounts.get("/tmp")
    check(tmp and "emptyDir" in volumes.get(tmp["name"], {}),
          "/tmp must be a writable emptyDir (the root filesystem is read-only)")

    # --- Resources, and the GPU exactly when the flags ask for CUDA.
    res = c.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    for r in ("cpu", "memory"):
        if check(r in req and r in lim, f"resources: {r} needs a request and a limit"):
            check(parse_quantity(req[r]) <= parse_quantity(lim[r]), f"{r} request > limit")
    threads = int(flags.get("intra_op_threads", "0"))
    if "cpu" in lim:
        check(0 < threads <= parse_quantity(lim["cpu"]),
              f"--intra_op_threads={threads}: set it to at most the cpu limit {lim['cpu']} "
              "(0 means one per node core)")
    gpu = lim.get("nvidia.com/gpu")
    tolerations = spec.get("tolerations") or []
    if device.startswith("cuda"):
        check(str(gpu) == "1", f"--device={device} but limits nvidia.com/gpu is {gpu}, not 1")
        check(str(req.get("nvidia.com/gpu", gpu)) == str(gpu), "GPU request differs from limit")
        check(spec.get("nodeSelector"), "GPU workers need a nodeSelector for GPU nodes")
        check(any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
                  and t.get("operator") in ("Exists", "Equal") for t in tolerations),
              "GPU workers need to tolerate the nvidia.com/gpu:NoSchedule taint")
    else:
        check(gpu is None and "nvidia.com/gpu" not in req,
              f"--device={device} but the pod requests a GPU")

    # --- Services: selectors match the pods, targetPorts resolve to the flags' ports.
    # The workers' Services (the dev overlay adds PostgreSQL's).
    services = [s for s in by_kind.get("Service", [])
                if s["metadata"].get("labels", {}).get("app.kubernetes.io/name")
                == pod_labels.get("app.kubernetes.io/name")]
    headless = [s for s in services if s["metadata"]["name"] == sts["spec"].get("serviceName")]
    check(headless and headless[0]["spec"].get("clusterIP") == "None",
          f"serviceName {sts['spec'].get('serviceName')} must be a headless Service")
    for s in services:
        name = s["metadata"]["name"]
        check(labels_match(s["spec"].get("selector"), pod_labels),
              f"Service {name}: selector does not match the pod labels")
        for p in s["spec"].get("ports", []):
            target = container_port(c, p.get("targetPort", p["port"]))
            check(target is not None, f"Service {name} port {p.get('name')}: targetPort "
                  f"{p.get('targetPort')} is no container port")
            if p.get("name") == "grpc":
                check(target == grpc_port and p.get("appProtocol") == "grpc",
                      f"Service {name} port grpc must reach {grpc_port} with appProtocol grpc")
            if p.get("name") == "metrics":
                check(target == metrics_port, f"Service {name} port metrics must reach "
                      f"{metrics_port}, reaches {target}")
            if p.get("name") == "http":
                check(target == http_port, f"Service {name} port http must reach "
                      f"{http_port}, reaches {target}")
    for port_name in ("grpc", "http"):
        exposing = [s for s in services if s["spec"].get("clusterIP") != "None"
                    and any(p.get("name") == port_name for p in s["spec"].get("ports", []))]
        check(exposing, f"no ClusterIP Service exposes the {port_name} port")

    # --- The ServiceMonitor scrapes the metrics port of exactly one Service.
    sm = by_kind["ServiceMonitor"][0]
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    selected = [s for s in services
                if labels_match(sm["spec"]["selector"].get("matchLabels"),
                                s["metadata"].get("labels", {}))]
    check(len(selected) == 1, f"ServiceMonitor selects {len(selected)} Services; one, or "
          "each worker is scraped more than once")
    endpoints = sm["spec"].get("endpoints", [])
    check(endpoints, "ServiceMonitor has no endpoints")
    for e in endpoints:
        for s in selected:
            ports = {p.get("name"): p for p in s["spec"].get("ports", [])}
            p = ports.get(e.get("port"))
            if check(p, f"ServiceMonitor port {e.get('port')!r} is no port name of Service "
                     f"{s['metadata']['name']}"):
                check(container_port(c, p.get("targetPort", p["port"])) == metrics_port,
                      f"ServiceMonitor port {e.get('port')} does not reach the metrics port")
        check(e.get("path", "/metrics") == "/metrics", "ServiceMonitor path must be /metrics")
        if tls:
            check(e.get("scheme") == "https", "ServiceMonitor must scrape with scheme https: "
                  "/metrics speaks TLS")
        if flags.get("auth_tokens_file"):
            creds = (e.get("authorization") or {}).get("credentials") or {}
            check(creds.get("name") and creds.get("key"), "ServiceMonitor needs "
                  "authorization.credentials (a Secret with a metrics token): /metrics needs one")
        check(e.get("honorLabels") is True, "ServiceMonitor needs honorLabels: true, or the "
              "training job's `job` label becomes exported_job")
    # The operator names the scrape job after the Service (or its jobLabel
    # label): the alert rules look for that name in up{job=...}.
    if len(selected) == 1 and opts.get("rules"):
        svc = selected[0]
        job = svc["metadata"].get("labels", {}).get(sm["spec"].get("jobLabel", ""),
                                                   svc["metadata"]["name"])
        with open(opts["rules"]) as f:
            rule_jobs = set(re.findall(r'\bup\{[^}]*\bjob="([^"]*)"', f.read()))
        check(rule_jobs, f"{opts['rules']}: no up{{job=...}} to check the scrape job name against")
        for j in sorted(rule_jobs):
            check(j == job, f"{opts['rules']} expects up{{job=\"{j}\"}}, the ServiceMonitor's "
                  f"job is {job!r}")

    # --- The NetworkPolicy admits chosen peers only, on the daemon's ports.
    policies = by_kind.get("NetworkPolicy", [])
    if check(len(policies) == 1, f"expected one NetworkPolicy, got {len(policies)}"):
        np = policies[0]["spec"]
        check(labels_match(np.get("podSelector", {}).get("matchLabels"), pod_labels),
              "NetworkPolicy podSelector does not match the pod labels")
        check("Ingress" in np.get("policyTypes", []), "NetworkPolicy must restrict Ingress")
        selector = np.get("podSelector", {}).get("matchLabels") or {}
        allowed = set()
        rank_ranges = []
        for rule in np.get("ingress", []):
            check(rule.get("from"), "NetworkPolicy: an ingress rule without `from` admits "
                  "every peer")
            ports = rule.get("ports") or []
            check(ports, "NetworkPolicy: an ingress rule without `ports` opens every port")
            # A rule beyond the daemon's ports: the workers' rule for the ranks.
            if any("endPort" in p or container_port(c, p.get("port")) is None for p in ports):
                rank_ranges += check_worker_rule(rule, selector, pod_labels)
                continue
            for p in ports:
                port = container_port(c, p.get("port"))
                check(port in (grpc_port, metrics_port, health_port, http_port),
                      f"NetworkPolicy admits port {p.get('port')}, which is no daemon port")
                allowed.add(port)
        check(grpc_port in allowed, "NetworkPolicy admits no client on the grpc port")
        check(http_port in allowed, "NetworkPolicy admits no client on the http port")
        check(metrics_port in allowed, "NetworkPolicy admits no scraper on the metrics port")
        check(any(f <= RANK_PORTS[0] and l >= RANK_PORTS[1] for f, l in rank_ranges),
              f"NetworkPolicy admits no worker from the others on TCP {RANK_PORTS[0]}-"
              f"{RANK_PORTS[1]} (port and endPort), where a job's ranks rendezvous and run "
              f"collectives over several nodes; it admits {rank_ranges}")

    # --- The PodDisruptionBudget covers the pods and never blocks a drain.
    pdb = by_kind["PodDisruptionBudget"][0]
    check(pdb["apiVersion"] == "policy/v1", "PodDisruptionBudget apiVersion must be policy/v1")
    check(labels_match(pdb["spec"]["selector"].get("matchLabels"), pod_labels),
          "PodDisruptionBudget selector does not match the pod labels")
    if "minAvailable" in pdb["spec"]:
        check(int(pdb["spec"]["minAvailable"]) < replicas,
              f"minAvailable {pdb['spec']['minAvailable']} with {replicas} replicas blocks drains")
    else:
        check(int(pdb["spec"].get("maxUnavailable", 0)) >= 1, "maxUnavailable must be >= 1")

    # --- The image: a pinned tag, and the Dockerfile's user and ports.
    image = c.get("image", "")
    check(re.search(r":[^/:]+$", image) and not image.endswith(":latest"),
          f"image {image!r} needs a pinned tag")
    if "dockerfile" in opts:
        with open(opts["dockerfile"]) as f:
            final = f.read().split("\nFROM ")[-1]  # the runtime stage
        m = re.search(r"^USER (\d+)", final, re.M)
        check(m and int(m.group(1)) == uid,
              f"Dockerfile's runtime USER {m and m.group(1)} differs from runAsUser {uid}")
        exposed = {int(p) for line in re.findall(r"^EXPOSE (.*)$", final, re.M)
                   for p in line.split()}
        want = {grpc_port, http_port, metrics_port} | ({health_port} if health_port else set())
        check(exposed == want,
              f"Dockerfile EXPOSEs {sorted(exposed)}, flags use {sorted(want)}")
    return


def _sts(docs):
    return next(d for d in docs if d["kind"] == "StatefulSet")


def _container(docs):
    return _sts(docs)["spec"]["template"]["spec"]["containers"][0]


def _set_flag(docs, name, value):
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    key = next(iter(cm["data"]))
    cm["data"][key] = re.sub(rf"^--{name}=.*$", f"--{name}={value}", cm["data"][key], flags=re.M)


def _claim(docs, name):
    return next(d for d in docs if d["kind"] == "PersistentVolumeClaim"
                and d["metadata"]["name"] == name)


def _env(docs, name):
    return next(e for e in _container(docs)["env"] if e["name"] == name)


def _set_arg(docs, prefix, value):
    """Replaces the container arg starting with prefix by value (None: drops it)."""
    args = _container(docs)["args"]
    i = next(i for i, a in enumerate(args) if a.startswith(prefix))
    if value is None:
        args.pop(i)
    else:
        args[i] = value


def _policy(docs):
    return next(d for d in docs if d["kind"] == "NetworkPolicy")


def _worker_rule(docs):
    return next(r for r in _policy(docs)["spec"]["ingress"]
                if any("endPort" in p for p in r.get("ports", [])))


def _postgres(docs):
    return next(d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"] == "postgres")


def _service(docs, headless):
    return next(d for d in docs if d["kind"] == "Service"
                and (d["spec"].get("clusterIP") == "None") == headless)


# (what breaks, how, a phrase of the error that must catch it)
MUTATIONS = [
    ("readiness probe on another port",
     lambda d: _container(d)["readinessProbe"]["grpc"].update(port=50052),
     "readinessProbe: probes port"),
    ("liveness probe over HTTP",
     lambda d: _container(d).update(livenessProbe={"httpGet": {"port": 9464}}),
     "native gRPC probe"),
    ("gRPC port moved in the flags only",
     lambda d: _set_flag(d, "grpc_address", "0.0.0.0:50052"), "container port 'grpc'"),
    ("REST port moved in the flags only",
     lambda d: _set_flag(d, "http_address", "0.0.0.0:8001"), "container port 'http'"),
    ("REST bound to loopback",
     lambda d: _set_flag(d, "http_address", "127.0.0.1:8000"), "--http_address must bind"),
    ("REST port missing from the Service",
     lambda d: _service(d, False)["spec"].update(ports=[
         p for p in _service(d, False)["spec"]["ports"] if p["name"] != "http"]),
     "no ClusterIP Service exposes the http port"),
    ("REST port missing from the NetworkPolicy",
     lambda d: [r.update(ports=[p for p in r["ports"] if p["port"] != "http"])
                for r in _policy(d)["spec"]["ingress"]],
     "NetworkPolicy admits no client on the http port"),
    ("daemon bound to loopback",
     lambda d: _set_flag(d, "metrics_address", "127.0.0.1:9464"), "must bind 0.0.0.0"),
    ("state_dir off the PVC",
     lambda d: _set_flag(d, "state_dir", "/data/mantissa"), "nothing is mounted at --state_dir"),
    ("drain longer than the grace period",
     lambda d: _set_flag(d, "drain_seconds", "60"), "terminationGracePeriodSeconds"),
    ("GPU limit dropped on a cuda worker",
     lambda d: _container(d)["resources"]["limits"].pop("nvidia.com/gpu", None), "nvidia.com/gpu"),
    ("running as root allowed",
     lambda d: _sts(d)["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False),
     "runAsNonRoot"),
    ("writable root filesystem",
     lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False),
     "readOnlyRootFilesystem"),
    ("ServiceMonitor port renamed",
     lambda d: next(x for x in d if x["kind"] == "ServiceMonitor")["spec"]["endpoints"][0].update(
         port="http-metrics"), "is no port name"),
    ("ServiceMonitor selecting the headless Service too",
     lambda d: _service(d, True)["metadata"]["labels"].update(
         next(x for x in d if x["kind"] == "ServiceMonitor")["spec"]["selector"]["matchLabels"]),
     "ServiceMonitor selects 2 Services"),
    ("ServiceMonitor without honorLabels",
     lambda d: next(x for x in d if x["kind"] == "ServiceMonitor")["spec"]["endpoints"][0].pop(
         "honorLabels"), "honorLabels"),
    ("Service renamed away from the rules' scrape job",
     lambda d: _service(d, False)["metadata"].update(name="mantissa-api"),
     "the ServiceMonitor's job"),
    ("PDB selector off the pods",
     lambda d: next(x for x in d if x["kind"] == "PodDisruptionBudget")["spec"]["selector"][
         "matchLabels"].update({"app.kubernetes.io/name": "other"}),
     "PodDisruptionBudget selector"),
    ("Service targetPort to a missing port",
     lambda d: _service(d, False)["spec"]["ports"][0].update(targetPort="grcp"),
     "is no container port"),
    ("probes on the TLS gRPC port",
     lambda d: _container(d)["livenessProbe"]["grpc"].update(port=50051),
     "livenessProbe: probes port"),
    ("plaintext on 0.0.0.0",
     lambda d: _set_flag(d, "tls_cert_file", ""), "--tls_cert_file and --tls_key_file"),
    ("tokens Secret not mounted",
     lambda d: _container(d).update(volumeMounts=[
         m for m in _container(d)["volumeMounts"] if m["name"] != "auth"]),
     "--auth_tokens_file=/etc/mantissa-auth/tokens: nothing is mounted"),
    ("ServiceMonitor scraping plain HTTP",
     lambda d: next(x for x in d if x["kind"] == "ServiceMonitor")["spec"]["endpoints"][0].pop(
         "scheme"), "scheme https"),
    ("ServiceMonitor without its token",
     lambda d: next(x for x in d if x["kind"] == "ServiceMonitor")["spec"]["endpoints"][0].pop(
         "authorization"), "authorization.credentials"),
    ("NetworkPolicy open to every peer",
     lambda d: next(x for x in d if x["kind"] == "NetworkPolicy")["spec"]["ingress"][0].pop(
         "from"), "without `from`"),
    ("NetworkPolicy dropped",
     lambda d: d.remove(next(x for x in d if x["kind"] == "NetworkPolicy")),
     "expected one NetworkPolicy"),
    ("flags ConfigMap not mounted where --flagfile points",
     lambda d: _container(d)["args"].__setitem__(0, "--flagfile=/etc/other/mantissad.flags"),
     "nothing is mounted at /etc/other"),
    # The fleet: one database from a Secret, one shared volume, many workers.
    ("database URI in the ConfigMap",
     lambda d: _set_flag(d, "lease_seconds", "30\n--database=postgresql://u:pw@db/mantissa"),
     "belong in a Secret"),
    ("database URI as a literal env value",
     lambda d: _env(d, "MANTISSA_DATABASE").update(
         value="postgresql://u@db/mantissa", valueFrom=None),
     "env MANTISSA_DATABASE must come from a Secret"),
    ("no --database argument",
     lambda d: _set_arg(d, "--database=", None), "--database=$(ENV_VAR)"),
    ("--database naming an env var that does not exist",
     lambda d: _set_arg(d, "--database=", "--database=$(DATABASE_URL)"),
     "the container has no env DATABASE_URL"),
    # Jobs over several workers: each advertises its pod IP, and the workers
    # (only they) reach each other's ranks.
    ("advertise address left at loopback",
     lambda d: _set_arg(d, "--advertise_address=", "--advertise_address=127.0.0.1"),
     "a literal is the same for every replica"),
    ("no --advertise_address",
     lambda d: _set_arg(d, "--advertise_address=", None), "args need --advertise_address"),
    ("--advertise_address before --flagfile, which would override it",
     lambda d: _container(d)["args"].insert(0, _container(d)["args"].pop()),
     "args must be --flagfile=PATH"),
    ("advertised IP from a literal env value",
     lambda d: _env(d, "POD_IP").update(value="10.0.0.7", valueFrom=None), "status.podIP"),
    ("advertised IP of the node, not the pod",
     lambda d: _env(d, "POD_IP")["valueFrom"]["fieldRef"].update(fieldPath="status.hostIP"),
     "status.podIP"),
    ("one --advertise_address in the ConfigMap for every replica",
     lambda d: _set_flag(d, "lease_seconds", "30\n--advertise_address=10.0.0.7"),
     "--advertise_address in the ConfigMap"),
    ("worker rule dropped",
     lambda d: _policy(d)["spec"]["ingress"].remove(_worker_rule(d)),
     "admits no worker from the others"),
    ("worker rule opened to every pod",
     lambda d: _worker_rule(d).update({"from": [{"podSelector": {}}]}),
     "only the worker pods themselves"),
    ("worker rule opened to the worker labels of every namespace",
     lambda d: _worker_rule(d)["from"][0].update(namespaceSelector={}),
     "only the worker pods themselves"),
    ("worker rule opened to every address",
     lambda d: _worker_rule(d)["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
     "only the worker pods themselves"),
    ("worker rule without `from`",
     lambda d: _worker_rule(d).pop("from"), "without `from`"),
    ("worker rule on UDP",
     lambda d: _worker_rule(d)["ports"][0].update(protocol="UDP"), "are TCP, not UDP"),
    ("worker rule on the kernel's default range only",
     lambda d: _worker_rule(d)["ports"][0].update(port=32768, endPort=60999),
     "admits no worker from the others"),
    ("clients admitted to the ranks' ports",
     lambda d: _policy(d)["spec"]["ingress"][0]["ports"].append(
         {"port": 1024, "endPort": 65535, "protocol": "TCP"}),
     "only the worker pods themselves"),
    ("one --worker_id for every replica",
     lambda d: _set_flag(d, "lease_seconds", "30\n--worker_id=mantissad"), "--worker_id"),
    ("no lease",
     lambda d: _set_flag(d, "lease_seconds", ""), "--lease_seconds"),
    ("state volume ReadWriteOnce in the fleet",
     lambda d: _claim(d, "mantissad-state")["spec"].update(accessModes=["ReadWriteOnce"]),
     "must be ReadWriteMany"),
    ("a state volume per worker",
     lambda d: next(v for v in _sts(d)["spec"]["template"]["spec"]["volumes"]
                    if v["name"] == "state").update(persistentVolumeClaim=None, emptyDir={}),
     "one shared PersistentVolumeClaim"),
    ("a single worker",
     lambda d: _sts(d)["spec"].update(replicas=1), "a fleet runs more than one worker"),
    ("grace period without room for a checkpoint",
     lambda d: _sts(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=60),
     "checkpoint and release"),
]

# Breakages of the dev overlay's PostgreSQL (checked with --postgres).
POSTGRES_MUTATIONS = [
    ("URI naming a host that is no Service",
     lambda d: _set_secret(d, "uri", "postgresql://mantissa@db:5432/mantissa"),
     "which is no rendered Service"),
    ("URI on another port",
     lambda d: _set_secret(d, "uri", "postgresql://mantissa@postgres:5433/mantissa"),
     "has no port 5433"),
    ("URI with another role",
     lambda d: _set_secret(d, "uri", "postgresql://admin@postgres:5432/mantissa"),
     "is not the server's POSTGRES_USER"),
    ("password in the URI",
     lambda d: _set_secret(d, "uri", "postgresql://mantissa:pw@postgres:5432/mantissa"),
     "the URI carries the password"),
    ("server password from a literal",
     lambda d: next(e for e in _postgres(d)["spec"]["template"]["spec"]["containers"][0]["env"]
                    if e["name"] == "POSTGRES_PASSWORD").update(value="x", valueFrom=None),
     "must be the same Secret key"),
    ("server data on an emptyDir",
     lambda d: _postgres(d)["spec"]["template"]["spec"]["volumes"][0].update(
         persistentVolumeClaim=None, emptyDir={}),
     "on a PersistentVolumeClaim"),
]


def _set_secret(docs, key, value):
    ref = _env(docs, "MANTISSA_DATABASE")["valueFrom"]["secretKeyRef"]
    secret = next(d for d in docs if d["kind"] == "Secret"
                  and d["metadata"]["name"] == ref["name"])
    secret["data"][key] = base64.b64encode(value.encode()).decode()


def self_test(docs, opts):
    global errors
    failures = []
    # The base's breakages with --fleet; the dev overlay's server's with --postgres.
    mutations = ((MUTATIONS if opts.get("fleet") is not None else [])
                 + (POSTGRES_MUTATIONS if opts.get("postgres") is not None else []))
    for what, mutate, phrase in mutations:
        mutated = copy.deepcopy(docs)
        mutate(mutated)
        errors = []
        run_checks(mutated, opts)
        if not any(phrase in e for e in errors):
            failures.append(f"self-test: {what!r} not caught (want {phrase!r}, got {errors})")
    errors = failures
    if not failures:
        print(f"self-test: all {len(mutations)} broken variants caught")


def report():
    for e in errors:
        print(f"FAIL: {e}")
    return 1 if errors else 0


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    opts = dict((a[2:].split("=", 1) + [""])[:2] for a in argv[1:] if a.startswith("--"))
    if len(args) != 1:
        sys.exit(__doc__)
    with open(args[0]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if "self-test" in opts:
        opts = {k: v for k, v in opts.items() if k in ("rules", "fleet", "postgres")}
        run_checks(docs, opts)
        if errors:
            return report()  # the unbroken manifests must pass first
        self_test(docs, opts)
    else:
        run_checks(docs, opts)
    return report()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
