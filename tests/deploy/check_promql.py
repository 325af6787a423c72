#!/usr/bin/env python3
"""Evaluates the dashboard's and the alert rules' PromQL against a live
Prometheus that scrapes a real mantissad (driven by prometheus_test.sh).

  check_promql.py PROMETHEUS_URL DASHBOARD_JSON RULES_YML {dashboard|alerts-up|alerts-down}

dashboard   every targets[].expr of the dashboard, template variables
            substituted, returns at least one series with a finite value, and
            every template variable's label_values() query finds values.
alerts-up   (daemon running) every alerting rule that Prometheus loaded from
            RULES_YML, except the daemon-down one, returns data for its
            expression and is active (pending or firing); the daemon-down
            rule is silent.
alerts-down (daemon stopped) the daemon-down rule returns data and is active.

Only the standard library: no jq, no PyYAML. Exit status 0 on success, 1 with
a list of failures otherwise.
"""

import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# The one rule whose condition needs the daemon gone; every other rule must
# fire while it runs, so a new rule fails this test until the run stages it.
DAEMON_DOWN_RULE = "MantissaDaemonDown"

# Template variables become regexes matching everything, as the dashboard's
# "All" does. $__rate_interval becomes a window that spans the whole test run
# (under 90 s), so every rate sees all of the run's traffic and the values
# must be finite, not just present.
VARIABLES = {"job": ".*", "model": ".*", "precision": ".*", "worker": ".*"}
RATE_INTERVAL = "2m"


def get(base, path, params=None):
    url = base + path
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def query(base, expr):
    """Returns (error or None, result list)."""
    try:
        body = get(base, "/api/v1/query", {"query": expr})
    except urllib.error.HTTPError as e:
        return "HTTP %d: %s" % (e.code, e.read().decode(errors="replace")), []
    if body.get("status") != "success":
        return "status %s: %s" % (body.get("status"), body.get("error")), []
    data = body["data"]
    if data["resultType"] != "vector":
        return "result type %s, expected vector" % data["resultType"], []
    return None, data["result"]


def substitute(expr):
    def replace(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name == "__rate_interval":
            return RATE_INTERVAL
        if name in VARIABLES:
            return VARIABLES[name]
        raise ValueError("unknown template variable $%s in %r" % (name, expr))

    # $name, ${name} and [[name]], as Grafana accepts them.
    return re.sub(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", replace, expr)


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        # Collapsed rows keep their panels inside.
        for inner in panel.get("panels", []):
            yield inner


def describe(result):
    return ", ".join(
        "%s=%s" % (json.dumps(r["metric"], sort_keys=True), r["value"][1]) for r in result[:4])


def check_dashboard(base, dashboard):
    failures, checked = [], 0
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            checked += 1
            where = "panel %r target %s" % (panel.get("title"), target.get("refId"))
            expr = substitute(target["expr"])
            error, result = query(base, expr)
            if error:
                failures.append("%s: %s\n    %s" % (where, error, expr))
            elif not result:
                failures.append("%s: no data\n    %s" % (where, expr))
            elif not any(math.isfinite(float(r["value"][1])) for r in result):
                failures.append("%s: no finite value (%s)\n    %s" % (where, describe(result), expr))
            else:
                print("ok   %s: %d series, e.g. %s" % (where, len(result), describe(result[:1])))
    if checked == 0:
        failures.append("the dashboard has no targets[].expr")

    variables = [v for v in dashboard.get("templating", {}).get("list", [])
                 if v.get("type") == "query"]
    names = sorted(v["name"] for v in variables)
    if names != sorted(VARIABLES):
        failures.append("query variables are %s, expected %s" % (names, sorted(VARIABLES)))
    for variable in variables:
        q = variable["query"]
        q = q["query"] if isinstance(q, dict) else q
        match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", q)
        if not match:
            failures.append("variable %s: not label_values(SELECTOR, LABEL): %r" % (variable["name"], q))
            continue
        selector, label = match.groups()
        body = get(base, "/api/v1/series", {"match[]": selector})
        values = sorted({s[label] for s in body.get("data", []) if label in s})
        if body.get("status") != "success" or not values:
            failures.append("variable %s: %r finds no values (%s)" % (variable["name"], q, body.get("error")))
        else:
            print("ok   variable %s: %s" % (variable["name"], values))
    return failures


def alerting_rules(base, rules_path):
    """The alerting rules Prometheus loaded; all of RULES_YML's, or a failure."""
    with open(rules_path) as f:
        in_file = re.findall(r"^\s*-\s*alert:\s*(\S+)", f.read(), re.M)
    groups = get(base, "/api/v1/rules")["data"]["groups"]
    loaded = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
    failures = []
    if sorted(r["name"] for r in loaded) != sorted(in_file):
        failures.append("Prometheus loaded alerting rules %s, %s has %s" % (
            sorted(r["name"] for r in loaded), rules_path, sorted(in_file)))
    if not in_file:
        failures.append("%s has no alerting rules" % rules_path)
    for rule in loaded:
        for key in ("severity",):
            if key not in rule.get("labels", {}):
                failures.append("rule %s: no %s label" % (rule["name"], key))
        for key in ("summary", "description"):
            if key not in rule.get("annotations", {}):
                failures.append("rule %s: no %s annotation" % (rule["name"], key))
    return loaded, failures


def active_alerts(base):
    return {a["labels"]["alertname"]: a["state"] for a in get(base, "/api/v1/alerts")["data"]["alerts"]}


def check_alerts(base, rules_path, daemon_up, timeout_s=30):
    rules, failures = alerting_rules(base, rules_path)
    expected = [r for r in rules if (r["name"] == DAEMON_DOWN_RULE) != daemon_up]
    # With the daemon up, the daemon-down rule must be silent. With it down,
    # the others may still be active: their alerts are kept until resolved.
    silent = [r for r in rules if r not in expected] if daemon_up else []
    if not daemon_up and not expected:
        failures.append("no rule named %s" % DAEMON_DOWN_RULE)

    # Rules are evaluated every second: wait for the conditions to be seen.
    deadline = time.time() + timeout_s
    while True:
        active = active_alerts(base)
        missing = [r["name"] for r in expected if r["name"] not in active]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.5)
    for rule in expected:
        error, result = query(base, rule["query"])
        if error:
            failures.append("rule %s: %s\n    %s" % (rule["name"], error, rule["query"]))
        elif not result:
            failures.append("rule %s: its expression returns no data\n    %s" % (rule["name"], rule["query"]))
        elif rule["name"] not in active:
            failures.append("rule %s: returns data but is not active" % rule["name"])
        else:
            print("ok   rule %s: %s, %d series, e.g. %s" % (
                rule["name"], active[rule["name"]], len(result), describe(result[:1])))
    for rule in silent:
        error, result = query(base, rule["query"])
        if error:
            failures.append("rule %s: %s" % (rule["name"], error))
        elif result or rule["name"] in active:
            failures.append("rule %s fires while the daemon runs: %s" % (rule["name"], describe(result)))
        else:
            print("ok   rule %s: silent while the daemon runs" % rule["name"])
    return failures


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("dashboard", "alerts-up", "alerts-down"):
        sys.exit(__doc__)
    base, dashboard_path, rules_path, mode = sys.argv[1:]
    if mode == "dashboard":
        with open(dashboard_path) as f:
            failures = check_dashboard(base, json.load(f))
    else:
        failures = check_alerts(base, rules_path, daemon_up=(mode == "alerts-up"))
    for failure in failures:
        print("FAIL " + failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
