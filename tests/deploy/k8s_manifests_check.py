#!/usr/bin/env python3
"""Structural check of rendered Kubernetes manifests (kubectl kustomize output).

Usage: k8s_manifests_check.py RENDERED.yaml [--dockerfile=PATH] [--rules=PATH]
                                             [--flagfile-out=PATH]
       k8s_manifests_check.py RENDERED.yaml --self-test [--rules=PATH]

Asserts what a cluster would only reveal at run time: that the probes, ports,
volumes, grace period and monitoring objects agree with the flags mantissad
actually gets from its ConfigMap, and with the image the Dockerfile builds.
Prints one line per failed assertion and exits 1 if there is any.
With --flagfile-out, writes the ConfigMap's flagfile there, for the caller to
hand to the real mantissad. --self-test breaks RENDERED.yaml in the ways listed
in MUTATIONS, one at a time, and passes only if each is caught.
"""

import copy
import os
import re
import sys

import yaml

# Seconds the daemon may need after the drain to cancel running jobs (within
# one training step) and close the server (3 s for open calls, main.cc).
JOB_STOP_BUDGET_S = 30
SERVER_SHUTDOWN_S = 3

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

    # --- The flags: the ConfigMap file that --flagfile names, mounted there.
    check(c.get("command") == ["mantissad"], f"command is {c.get('command')}, not [mantissad]")
    flagfile_args = [a for a in c.get("args", []) if a.startswith("--flagfile=")]
    if not check(len(flagfile_args) == 1 and len(c.get("args", [])) == 1,
                 f"args must be exactly one --flagfile=PATH, got {c.get('args')}"):
        return
    flagfile = flagfile_args[0].split("=", 1)[1]
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

    grpc_host, grpc_port = host_port(flags, "grpc_address")
    metrics_host, metrics_port = host_port(flags, "metrics_address")
    check(grpc_host == "0.0.0.0", f"--grpc_address must bind 0.0.0.0 in a pod, got {grpc_host}")
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
    check(grace > drain + JOB_STOP_BUDGET_S + SERVER_SHUTDOWN_S,
          f"terminationGracePeriodSeconds {grace} <= drain {drain} + job stop "
          f"{JOB_STOP_BUDGET_S} + server shutdown {SERVER_SHUTDOWN_S}")

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

    # --- --state_dir is a PersistentVolumeClaim, mounted writable.
    claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
    state_mount = mounts.get(state_dir)
    if check(state_mount, f"nothing is mounted at --state_dir={state_dir}"):
        check(state_mount["name"] in claims,
              f"--state_dir is mounted from {state_mount['name']}, not a volumeClaimTemplate")
        check(not state_mount.get("readOnly"), "the state volume is mounted readOnly")
        claim = claims.get(state_mount["name"], {}).get("spec", {})
        check("ReadWriteOnce" in claim.get("accessModes", []), "state PVC must be ReadWriteOnce")
        check(claim.get("resources", {}).get("requests", {}).get("storage"),
              "state PVC requests no storage")
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
    services = by_kind.get("Service", [])
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
    grpc_services = [s for s in services if s["spec"].get("clusterIP") != "None"
                     and any(p.get("name") == "grpc" for p in s["spec"].get("ports", []))]
    check(grpc_services, "no ClusterIP Service exposes the grpc port")

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
        allowed = set()
        for rule in np.get("ingress", []):
            check(rule.get("from"), "NetworkPolicy: an ingress rule without `from` admits "
                  "every peer")
            ports = rule.get("ports") or []
            check(ports, "NetworkPolicy: an ingress rule without `ports` opens every port")
            for p in ports:
                port = container_port(c, p.get("port"))
                check(port in (grpc_port, metrics_port, health_port),
                      f"NetworkPolicy admits port {p.get('port')}, which is no daemon port")
                allowed.add(port)
        check(grpc_port in allowed, "NetworkPolicy admits no client on the grpc port")
        check(metrics_port in allowed, "NetworkPolicy admits no scraper on the metrics port")

    # --- The PodDisruptionBudget covers the pods and never blocks a drain.
    pdb = by_kind["PodDisruptionBudget"][0]
    check(pdb["apiVersion"] == "policy/v1", "PodDisruptionBudget apiVersion must be policy/v1")
    check(labels_match(pdb["spec"]["selector"].get("matchLabels"), pod_labels),
          "PodDisruptionBudget selector does not match the pod labels")
    replicas = sts["spec"].get("replicas", 1)
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
        want = {grpc_port, metrics_port} | ({health_port} if health_port else set())
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
     lambda d: _container(d).update(args=["--flagfile=/etc/other/mantissad.flags"]),
     "nothing is mounted at /etc/other"),
]


def self_test(docs, opts):
    global errors
    failures = []
    for what, mutate, phrase in MUTATIONS:
        mutated = copy.deepcopy(docs)
        mutate(mutated)
        errors = []
        run_checks(mutated, opts)
        if not any(phrase in e for e in errors):
            failures.append(f"self-test: {what!r} not caught (want {phrase!r}, got {errors})")
    errors = failures
    if not failures:
        print(f"self-test: all {len(MUTATIONS)} broken variants caught")


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
        opts = {k: v for k, v in opts.items() if k == "rules"}
        run_checks(docs, opts)
        if errors:
            return report()  # the unbroken manifests must pass first
        self_test(docs, opts)
    else:
        run_checks(docs, opts)
    return report()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
