#!/usr/bin/env python3
"""Mantissa's training benchmark beside Lightning Fabric, as one table.

    benchmark_table.py MANTISSA.jsonl [--cuda-graph MANTISSA_GRAPH.jsonl]
                       [--fabric FABRIC.jsonl] [--markdown] [--targets] | --check

MANTISSA.jsonl is mantissa_train_benchmark's output, --cuda-graph the same run
with --cuda_graph, --fabric fabric_benchmark.py's. Fabric figures missing from
--fabric fall back to the anchors in Mantissa's lines (DESIGN.md). --targets
exits 1 if a performance target is missed.
"""
import argparse
import contextlib
import io
import json
import os
import sys

MIN_SPEEDUP = 1.15       # (a) over default Fabric
GPT_BF16_TRUE_TFLOPS = 320.0  # (d)
TE_OVER_BF16_MIXED = 1.3  # (e)
TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def read_jsonl(path):
    """The JSON objects in a file; other lines (tables, prose) are skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "workload" in record:
                records.append(record)
    return records


def measured(record):
    return record is not None and "skipped" not in record and "error" not in record


def fabric_figures(record, fabric, mode):
    """(step ms, peak MiB, source, note) of Fabric's default or tuned row."""
    run = fabric.get((record["workload"], record["precision"], mode))
    if measured(run) and run.get("scale") == record.get("scale"):
        return (run["step_ms"], run.get("peak_alloc_mib"), "run",
                f"Fabric {mode} loss NaN" if run.get("nan_loss") else "")
    note = ""
    if run is not None:
        note = (f"Fabric {mode} failed: {run['error']}" if "error" in run
                else f"Fabric {mode} ran at scale {run.get('scale')}")
    if mode == "default":
        ms, mib = record.get("fabric_step_ms"), record.get("fabric_peak_mib")
    else:
        ms, mib = record.get("fabric_tuned_step_ms"), None
    return ms, mib, "anchor" if ms is not None else "-", note


def build_rows(mantissa, graph=(), fabric=()):
    """One dict per Mantissa line: its figures, Fabric's, and the speedups."""
    graphs = {(r["workload"], r["precision"]): r for r in graph}
    fabrics = {(r["workload"], r.get("precision"), r.get("mode", "default")): r
               for r in fabric}
    rows = []
    for rec in mantissa:
        row = {"workload": rec["workload"], "precision": rec["precision"],
               "device": rec.get("device", ""), "scale": rec.get("scale"),
               "status": "ok", "notes": []}
        rows.append(row)
        if not measured(rec):
            row["status"] = "skipped" if "skipped" in rec else "failed"
            row["notes"].append(f"{row['status']}: {rec.get('skipped', rec.get('error'))}")
            continue
        g = graphs.get((rec["workload"], rec["precision"]))
        if g is not None and not measured(g):
            row["notes"].append(f"CUDA graph run {'skipped' if 'skipped' in g else 'failed'}: "
                                f"{g.get('skipped', g.get('error'))}")
        # Same workload and batch on both sides: step-time ratios are throughput ratios.
        best = g if measured(g) and g["step_ms"] < rec["step_ms"] else rec
        row.update(
            eager_ms=rec["step_ms"], graph_ms=g["step_ms"] if measured(g) else None,
            best="graph" if best is g else "eager", best_ms=best["step_ms"],
            items_per_s=best["items_per_s"], peak_mib=best["peak_alloc_mib"],
            tflops=best["tflops"], loss=best.get("final_loss"))
        if rec.get("effective_precision", rec["precision"]) != rec["precision"]:
            row["notes"].append(f"runs as {rec['effective_precision']}")
        for mode, prefix in (("default", "fab"), ("tuned", "tuned")):
            ms, mib, src, note = fabric_figures(rec, fabrics, mode)
            row.update({f"{prefix}_ms": ms, f"{prefix}_mib": mib, f"{prefix}_src": src,
                        f"vs_{mode}": ms / best["step_ms"] if ms else None})
            if note:
                row["notes"].append(note)
    return rows


def header(mantissa, fabric):
    first = next((r for r in mantissa if measured(r)), {})
    text = (f"Mantissa on {first.get('device_name', '?')} (LibTorch {first.get('libtorch', '?')},"
            f" scale {first.get('scale', '?')})")
    run = next((r for r in fabric if measured(r)), None)
    if run:
        text += (f"; Fabric re-measured on {run.get('device_name', '?')} (torch "
                 f"{run.get('torch', '?')}, Lightning {run.get('lightning', '?')})")
    return text + "; Fabric anchors: DESIGN.md, H100, PyTorch 2.11"


def fmt(value, spec=".4g", suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


COLUMNS = ["work", "precision", "eager ms", "graph ms", "best", "items/s", "peak MiB",
           "TFLOP/s", "loss", "Fabric ms", "Fabric MiB", "tuned ms", "Fabric from",
           "vs default", "vs tuned", "note"]


def cells(row):
    if row["status"] != "ok":
        return [row["workload"], row["precision"]] + ["-"] * 13 + ["; ".join(row["notes"])]
    return [row["workload"], row["precision"], fmt(row["eager_ms"]), fmt(row["graph_ms"]),
            row["best"], fmt(row["items_per_s"], ".0f"), fmt(row["peak_mib"]),
            fmt(row["tflops"]), fmt(row["loss"]), fmt(row["fab_ms"]), fmt(row["fab_mib"]),
            fmt(row["tuned_ms"]), f"{row['fab_src']}/{row['tuned_src']}",
            fmt(row["vs_default"], ".3f", "x"), fmt(row["vs_tuned"], ".3f", "x"),
            "; ".join(row["notes"])]


def render(rows, title, markdown):
    table = [cells(r) for r in rows]
    legend = ("best: the faster Mantissa run, whose items/s (tokens/s for gpt), peak, "
              "TFLOP/s and loss are shown; Fabric from: default/tuned figures re-measured "
              "(run) or DESIGN.md anchors; vs = Fabric ms / best ms (> 1: Mantissa faster).")
    if markdown:
        lines = [title, "", "| " + " | ".join(COLUMNS) + " |",
                 "|" + "|".join(["---"] * 2 + ["---:"] * 13 + ["---"]) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in t) + " |" for t in table]
        return "\n".join(lines + ["", legend])
    widths = [max(len(t[i]) for t in table + [COLUMNS]) for i in range(len(COLUMNS) - 1)]

    def line(t):
        left = [t[i].ljust(widths[i]) for i in (0, 1)]
        right = [t[i].rjust(widths[i]) for i in range(2, len(widths))]
        return "  ".join(left + right + [t[-1]]).rstrip()
    return "\n".join([title, line(COLUMNS)] + [line(t) for t in table] + [legend])


def not_applicable(row):
    """Why the targets do not apply to a row (they are for full-size CUDA runs), or None."""
    if row is None:
        return "no such row"
    if row["status"] != "ok":
        return f"row {row['status']}"
    if not row["device"].startswith("cuda"):
        return f"{row['device']} run"
    return None if row["scale"] == 1 else f"scale {row['scale']}"


def check_targets(rows):
    """[(target, subject, outcome, detail)], outcome PASS, MISS or n/a."""
    out = []

    def add(target, subject, why, ok=None, detail=""):
        out.append((target, subject, "n/a" if why else ("PASS" if ok else "MISS"), why or detail))

    for row in rows:
        name = f"{row['workload']} {row['precision']}"
        why = not_applicable(row)
        if why:
            for target in "abc":
                add(target, name, why)
            continue
        best = f"{row['best_ms']:.4g} ms {row['best']}"
        add("a", name, None if row["fab_ms"] else "no Fabric figure",
            row["vs_default"] and row["vs_default"] >= MIN_SPEEDUP,
            f"{fmt(row['vs_default'], '.3f')}x default Fabric ({fmt(row['fab_ms'])} ms "
            f"{row['fab_src']} / {best}), needs >= {MIN_SPEEDUP}x")
        add("b", name, None if row["tuned_ms"] else "no tuned Fabric figure",
            row["vs_tuned"] and row["vs_tuned"] > 1.0,
            f"{fmt(row['vs_tuned'], '.3f')}x tuned Fabric ({fmt(row['tuned_ms'])} ms "
            f"{row['tuned_src']} / {best}), needs > 1x")
        limits = [(row["fab_mib"], f"default {row['fab_src']}")]
        if row["tuned_src"] == "run" and row["tuned_mib"] is not None:
            limits.append((row["tuned_mib"], "tuned run"))
        limits = [(mib, what) for mib, what in limits if mib is not None]
        add("c", name, None if limits else "no Fabric peak",
            all(row["peak_mib"] <= mib for mib, _ in limits),
            f"peak {row['peak_mib']:.4g} MiB {row['best']} vs Fabric "
            + ", ".join(f"{mib:.4g} MiB {what}" for mib, what in limits))
    by_key = {(r["workload"], r["precision"]): r for r in rows}
    gpt = by_key.get(("gpt", "bf16-true"))
    why = not_applicable(gpt)
    if why:
        add("d", "gpt bf16-true", why)
    else:
        add("d", "gpt bf16-true", None, gpt["tflops"] >= GPT_BF16_TRUE_TFLOPS,
            f"{gpt['tflops']:.1f} TFLOP/s {gpt['best']}, needs >= {GPT_BF16_TRUE_TFLOPS:g}")
    te, mixed = by_key.get(("gpt", "transformer-engine")), by_key.get(("gpt", "bf16-mixed"))
    why = ((not_applicable(te) and f"transformer-engine: {not_applicable(te)}")
           or (not_applicable(mixed) and f"bf16-mixed: {not_applicable(mixed)}"))
    if why:
        add("e", "gpt transformer-engine", why)
    else:
        ratio = te["items_per_s"] / mixed["items_per_s"]
        add("e", "gpt transformer-engine", None, ratio >= TE_OVER_BF16_MIXED,
            f"{ratio:.3f}x bf16-mixed tokens/s ({te['items_per_s']:.0f} {te['best']} / "
            f"{mixed['items_per_s']:.0f} {mixed['best']}), needs >= {TE_OVER_BF16_MIXED}x")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mantissa", nargs="?", help="mantissa_train_benchmark output")
    parser.add_argument("--cuda-graph", help="the same benchmark run with --cuda_graph")
    parser.add_argument("--fabric", help="fabric_benchmark.py output")
    parser.add_argument("--markdown", action="store_true", help="a GitHub markdown table")
    parser.add_argument("--targets", action="store_true",
                        help="check the performance targets; exit 1 if one is missed")
    parser.add_argument("--check", action="store_true", help="self-test on testdata/")
    args = parser.parse_args(argv)
    if args.check:
        return self_test()
    if not args.mantissa:
        parser.error("MANTISSA.jsonl is required")
    mantissa = read_jsonl(args.mantissa)
    graph = read_jsonl(args.cuda_graph) if args.cuda_graph else []
    fabric = read_jsonl(args.fabric) if args.fabric else []
    rows = build_rows(mantissa, graph, fabric)
    print(render(rows, header(mantissa, fabric), args.markdown))
    if not args.targets:
        return 0
    results = check_targets(rows)
    print()
    for target, subject, outcome, detail in results:
        shown = f"n/a ({detail})" if outcome == "n/a" else f"{outcome}  {detail}"
        print(f"({target}) {subject:<24} {shown}")
    return 1 if any(r[2] == "MISS" for r in results) else 0


def self_test():
    cpu, h100, graph, fabric = (os.path.join(TESTDATA, name) for name in (
        "cpu_scale0.05.jsonl", "invented_h100_mantissa.jsonl",
        "invented_h100_mantissa_cuda_graph.jsonl", "invented_h100_fabric.jsonl"))

    def run(*argv):  # main() in-process: (exit status, stdout)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    def outcomes(rows):
        return {(t, s): o for t, s, o, _ in check_targets(rows)}

    # The real CPU run: its summary table is skipped, its 16-true rows are skipped.
    rows = build_rows(read_jsonl(cpu))
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(rows) == 10 and [r["precision"] for r in skipped] == ["16-true"] * 2, rows
    assert "float16" in skipped[0]["notes"][0] and set(outcomes(rows).values()) == {"n/a"}
    assert all(r["fab_ms"] is None for r in rows if r["status"] == "ok")
    code, text = run(cpu, "--targets")
    assert code == 0 and "n/a (cpu run)" in text and "n/a (row skipped)" in text, text

    # H100, anchors only: eager figures, two targets missed.
    rows = build_rows(read_jsonl(h100))
    by = {(r["workload"], r["precision"]): r for r in rows}
    mlp = by[("mlp", "bf16-true")]
    assert len(rows) == 12 and by[("mlp", "transformer-engine")]["status"] == "failed"
    assert (mlp["fab_ms"], mlp["fab_src"], mlp["best"]) == (5.28, "anchor", "eager")
    assert abs(mlp["vs_default"] - 5.28 / 4.71) < 1e-9
    result = outcomes(rows)
    assert result[("a", "mlp bf16-true")] == result[("b", "gpt bf16-mixed")] == "MISS"
    assert result[("b", "mlp 32-true")] == result[("a", "mlp transformer-engine")] == "n/a"
    assert result[("d", "gpt bf16-true")] == result[("e", "gpt transformer-engine")] == "PASS"
    code, text = run(h100, "--targets")
    assert code == 1 and "MISS" in text, text

    # With the CUDA-graph run and re-measured Fabric: graph rows where faster, all met.
    rows = build_rows(read_jsonl(h100), read_jsonl(graph), read_jsonl(fabric))
    by = {(r["workload"], r["precision"]): r for r in rows}
    mlp = by[("mlp", "bf16-true")]
    assert (mlp["best"], mlp["best_ms"], mlp["peak_mib"]) == ("graph", 4.22, 760)
    assert (mlp["fab_ms"], mlp["fab_src"], mlp["tuned_ms"], mlp["tuned_mib"]) == (
        5.25, "run", 4.69, 776)
    assert by[("mlp", "32-true")]["best"] == "eager"  # its graph run is slower
    gpt16 = by[("gpt", "16-mixed")]  # tuned re-run failed: the anchor stands in
    assert (gpt16["tuned_ms"], gpt16["tuned_src"]) == (25.4, "anchor")
    assert "Fabric tuned failed" in gpt16["notes"][0]
    assert by[("gpt", "16-true")]["notes"] == ["Fabric default loss NaN"]
    assert "graph run failed: FAILED_PRECONDITION" in by[("gpt", "transformer-engine")]["notes"][0]
    result = outcomes(rows)
    assert "MISS" not in result.values(), result
    assert result[("b", "gpt bf16-mixed")] == "PASS"
    assert result[("c", "gpt transformer-engine")] == "n/a"
    code, text = run(h100, "--cuda-graph", graph, "--fabric", fabric, "--targets", "--markdown")
    assert code == 0 and "Lightning 2.6.0" in text and "| mlp | bf16-true | 4.71 | 4.22 |" in text
    print("benchmark_table.py --check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
