"""From timings to figures: speedups, throughput, % of the device's limit,
per-op summaries, the targets, and the text / Markdown / JSON / PNG outputs."""
import json
import math
import re

from .cases import GROUPS, OVERHEAD

# (label, op, statistic, row filter, threshold, field). Checked by people, not by
# the bench: it reports "pass" or "short", never fails.
def _shapes(keep):
    """Rows of the op's shapes, not its call-overhead case (which has its own target)."""
    return lambda r: r["case"] != OVERHEAD and keep(r)


_ALL = lambda r: True  # noqa: E731

# (label, op (None: every op), statistic, row filter, threshold, field). Checked
# by people, not by the bench: it reports "pass" or "short", never fails.
TARGETS = [
    ("conv2d_activation >= 1.0x on every LeNet-5/AlexNet shape (min)", "conv2d_activation",
     "min", _shapes(_ALL), 1.0, "speedup"),
    ("conv2d_activation >= 1.3x over LeNet-5's shapes (geomean)", "conv2d_activation",
     "geomean", _shapes(lambda r: r["case"].startswith("lenet")), 1.3, "speedup"),
    # The op issues ask for these on every shape and direction: the minimum counts.
    ("avg_subsample >= 3x on every shape (min)", "avg_subsample", "min", _shapes(_ALL), 3.0, "speedup"),
    ("local_response_norm >= 8x fwd (min)", "local_response_norm",
     "min", _shapes(lambda r: r["direction"] == "fwd"), 8.0, "speedup"),
    ("local_response_norm >= 4x fwd+bwd (min)", "local_response_norm",
     "min", _shapes(lambda r: r["direction"] == "fwd+bwd"), 4.0, "speedup"),
    ("rbf_distance >= 1.5x on every shape (min)", "rbf_distance", "min", _shapes(_ALL), 1.5, "speedup"),
    # Issue 17: the cost of a call on the smallest tensors, every op.
    ("call overhead: every op >= 1.5x fwd (min)", None,
     "min", lambda r: r["case"] == OVERHEAD and r["direction"] == "fwd", 1.5, "speedup"),
    ("call overhead: every op >= 1.5x fwd+bwd (min)", None,
     "min", lambda r: r["case"] == OVERHEAD and r["direction"] == "fwd+bwd", 1.5, "speedup"),
    ("LeNet-5 training step >= 1.5x", "models",
     "min", lambda r: r["case"] == "LeNet5" and r["direction"] == "train step", 1.5, "speedup"),
    # Issue 21, the whole network as one op (also >= 20,000 and 60,000 img/s on 2 cores).
    ("LeNet-5 training step >= 3x", "models",
     "min", lambda r: r["case"] == "LeNet5" and r["direction"] == "train step", 3.0, "speedup"),
    ("LeNet-5 inference >= 4x", "models",
     "min", lambda r: r["case"] == "LeNet5" and r["direction"] == "inference", 4.0, "speedup"),
    # Issue 18 (CPU targets on every x86 kind): 1.2x.
    ("AlexNet training step >= 1.2x", "models",
     "min", lambda r: r["case"] == "AlexNet" and r["direction"] == "train step", 1.2, "speedup"),
    ("LeNet-5 training step: fused >= 1.0x compiled reference (--compile)", "models",
     "min", lambda r: r["case"] == "LeNet5" and r["direction"] == "train step", 1.0,
     "speedup_vs_compiled"),
]


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _ratio(a, b):
    return a / b if a and b else None


def derive(res, limits, device_type):
    """Adds speedup (reference / fused), speedup_vs_compiled (compiled / fused),
    throughput and % of the measured limit (and of the datasheet, if known)."""
    res["speedup"] = _ratio(res.get("reference_s"), res.get("fused_s"))
    res["speedup_vs_compiled"] = _ratio(res.get("compiled_s"), res.get("fused_s"))
    if res["op"] == "models":
        return res
    compute = res["bound"] == "compute"
    work = res["flops"] if compute else res["bytes"]
    unit = ("GFLOP/s" if device_type == "cpu" else "TFLOP/s") if compute else "GB/s"
    scale = {"GFLOP/s": 1e9, "TFLOP/s": 1e12, "GB/s": 1e9}[unit]
    compute_limit = limits.get("compute_flops_per_s", limits["matmul_flops_per_s"])
    limit = compute_limit if compute else limits["copy_bytes_per_s"]
    sheet = limits.get("datasheet") or {}
    sheet = sheet.get("compute_flops_per_s" if compute else "bandwidth_bytes_per_s")
    res["throughput_unit"] = unit
    for impl in ("reference", "fused", "compiled"):
        rate = _ratio(work, res.get(f"{impl}_s"))
        res[f"{impl}_throughput"] = rate / scale if rate else None
        res[f"{impl}_pct_of_limit"] = 100 * rate / limit if rate else None
        res[f"{impl}_pct_of_datasheet"] = 100 * rate / sheet if rate and sheet else None
    return res


def summarize(results):
    """Per op: geometric-mean speedup over every measured (shape, direction), per
    direction, the slowest case, and the same against the compiled reference."""
    out = {}
    for op in GROUPS.values():
        rows = [r for r in results if r["op"] == op]
        if not rows:
            continue
        ok = [r for r in rows if r.get("speedup")]
        s = {"cases": len(rows), "measured": len(ok),
             "not_available": sum(r["status"] == "not available" for r in rows),
             "errors": sum(r["status"] == "error" for r in rows),
             "geomean_speedup": geomean([r["speedup"] for r in ok]),
             "geomean_speedup_vs_compiled": geomean([r.get("speedup_vs_compiled") for r in ok])}
        for d in sorted({r["direction"] for r in rows}):
            s[f"geomean_speedup_{d}"] = geomean([r["speedup"] for r in ok if r["direction"] == d])
        if ok:
            worst = min(ok, key=lambda r: r["speedup"])
            s["min_speedup"], s["min_case"] = worst["speedup"], f"{worst['case']} {worst['direction']}"
        notes = {r["note"] for r in rows if r["status"] == "not available"}
        s["note"] = "; ".join(sorted(notes))
        out[op] = s
    return out


def targets(results, compiled):
    out = []
    for label, op, stat, keep, threshold, field in TARGETS:
        rows = [r for r in results if (r["op"] == op if op else r["op"] != "models") and keep(r)]
        vals = [r.get(field) for r in rows if r.get(field)]
        t = {"target": label, "threshold": threshold, "value": None, "status": "n/a", "detail": ""}
        if field == "speedup_vs_compiled" and not compiled:
            t["detail"] = "run with --compile"
        elif not rows:
            t["detail"] = "not run"
        elif not vals:
            t["detail"] = "not available" if any(r["status"] == "not available" for r in rows) else "no measurement"
        else:
            if stat == "min":
                worst = min((r for r in rows if r.get(field)), key=lambda r: r[field])
                t["value"] = worst[field]
                if len(vals) > 1:
                    where = worst["op"] if op is None else f"{worst['case']} {worst['direction']}"
                    t["detail"] = f"at {where}"
            else:
                t["value"] = geomean(vals)
                t["detail"] = f"over {len(vals)} (min {min(vals):.2f}x)"
            t["status"] = "pass" if t["value"] >= threshold * (1 - 1e-9) else "short"  # float noise of the geomean
        out.append(t)
    return out


# --- formatting -------------------------------------------------------------------

def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_x(v):
    return f"{v:.2f}x" if v else "-"


def fmt_num(v):
    """Three significant digits, thousands separated."""
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def fmt_rate(bytes_or_flops_per_s, unit_flops):
    v = bytes_or_flops_per_s
    if v >= 1e12:
        return f"{v / 1e12:.2f} T{unit_flops}"
    return f"{v / 1e9:.1f} G{unit_flops}"


def _status_cell(r, fused_time):
    if r["status"] == "not available" and fused_time is None:  # else the reference is the one missing
        return "not available"
    if r["status"] == "error":
        return "ERROR"
    return None


def op_rows(results, compiled):
    """Header and rows (lists of strings) of one op's table."""
    head = ["case", "shape", "dir", "reference", "fused", "speedup"]
    paths = any(r.get("path") for r in results)  # the conv's kernel paths (forward + backward)
    if paths:
        head.insert(3, "path")
    if compiled:
        head += ["compiled ref", "vs compiled", "compile"]
    head += ["fused throughput", "% limit", "saved B/elem ref->fused"]
    rows = []
    for r in results:
        cell = _status_cell(r, r.get("fused_s"))
        row = [r["case"], r["shape"], r["direction"], fmt_time(r.get("reference_s")),
               cell or fmt_time(r.get("fused_s")), fmt_x(r.get("speedup"))]
        if paths:
            row.insert(3, r.get("path") or "-")
        if compiled:
            row += [fmt_time(r.get("compiled_s")), fmt_x(r.get("speedup_vs_compiled")),
                    fmt_time(r.get("compile_time_s"))]
        thr = r.get("fused_throughput")
        pct = r.get("fused_pct_of_limit")
        if pct is not None and r.get("fused_pct_of_datasheet") is not None:
            pct_s = f"{pct:.0f}% ({r['fused_pct_of_datasheet']:.0f}% sheet)"
        else:
            pct_s = f"{pct:.0f}%" if pct is not None else "-"
        saved = "-"
        if r.get("saved_bytes_per_elem_fused") is not None:
            saved = f"{r['saved_bytes_per_elem_reference']:.1f}->{r['saved_bytes_per_elem_fused']:.1f}"
        row += [f"{fmt_num(thr)} {r['throughput_unit']}" if thr else "-", pct_s, saved]
        rows.append(row)
    return head, rows


def model_rows(results, compiled):
    head = ["model", "batch", "mode", "reference img/s", "fused img/s", "speedup"]
    if compiled:
        head += ["compiled ref img/s", "vs compiled", "compile"]
    rows = []
    for r in results:
        cell = _status_cell(r, r.get("fused_images_per_s"))
        row = [r["case"], str(r["batch"]), r["direction"], fmt_num(r.get("reference_images_per_s")),
               cell or fmt_num(r.get("fused_images_per_s")), fmt_x(r.get("speedup"))]
        if compiled:
            row += [fmt_num(r.get("compiled_images_per_s")), fmt_x(r.get("speedup_vs_compiled")),
                    fmt_time(r.get("compile_time_s"))]
        rows.append(row)
    return head, rows


def summary_line(op, s):
    if not s["measured"]:
        why = s["note"] or ("errors" if s["errors"] else "nothing measured")
        return f"{op}: not available ({why})" if s["not_available"] else f"{op}: no measurement ({why})"
    parts = [f"{op}: geomean speedup {fmt_x(s['geomean_speedup'])} over {s['measured']} measurements"]
    dirs = [f"{k[len('geomean_speedup_'):]} {fmt_x(v)}" for k, v in s.items()
            if k.startswith("geomean_speedup_") and k != "geomean_speedup_vs_compiled" and v]
    if dirs:
        parts.append(", ".join(dirs))
    parts.append(f"slowest {fmt_x(s['min_speedup'])} ({s['min_case']})")
    if s.get("geomean_speedup_vs_compiled"):
        parts.append(f"vs compiled reference {fmt_x(s['geomean_speedup_vs_compiled'])}")
    if s["not_available"] or s["errors"]:
        parts.append(f"{s['not_available']} not available, {s['errors']} errors")
    return "; ".join(parts)


def _text_table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _md_table(head, rows):
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def limits_line(dev):
    lim = dev["limits"]
    cpu = dev["device"] == "cpu"
    s = (f"limits measured in this run: copy {fmt_rate(lim['copy_bytes_per_s'], 'B/s')} "
         f"({lim['copy_size_bytes'] >> 20} MiB device to device), ")
    if lim.get("peak_fma_flops_per_s"):  # the CPU: % limit is of the variant's peak
        s += (f"peak FMA {dev['dtype']} {fmt_rate(lim['peak_fma_flops_per_s'], 'FLOP/s')} "
              f"({dev.get('cpu_isa', '?')} vectors, {dev.get('threads', '?')} threads; the compute limit), ")
    s += (f"matmul {dev['dtype']} {fmt_rate(lim['matmul_flops_per_s'], 'FLOP/s')} "
          f"({lim['matmul_size']}^3{', TF32 off' if not cpu and dev['dtype'] == 'float32' else ''}"
          f"{'; for comparison' if lim.get('peak_fma_flops_per_s') else ''})")
    sheet = lim.get("datasheet")
    if sheet:
        s += (f"\ndatasheet {sheet['device']}: {fmt_rate(sheet['bandwidth_bytes_per_s'], 'B/s')}"
              + (f", {fmt_rate(sheet['compute_flops_per_s'], 'FLOP/s')} {dev['dtype']} dense"
                 if sheet.get("compute_flops_per_s") else ""))
    elif not cpu:
        s += "\ndatasheet: device not in the table (H100 SXM, H200): measured limits only"
    return s


def device_title(dev):
    """The device's model, and on the CPU the kernel variant and the cores."""
    if dev["device"] != "cpu":
        return dev["device_name"]
    return (f"{dev['device_name']}, {dev.get('cpu_isa', '?')} kernels, "
            f"{dev.get('cores', '?')} cores")


def results_name(dev):
    """bench/results' file name (no suffix) for a CPU run: cpu-<model>-<isa>."""
    model = re.sub(r"\(r\)|\(tm\)|processor|cpu|@.*", " ", dev["device_name"].lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "unknown"
    return f"cpu-{model}-{dev.get('cpu_isa', 'unknown')}"


def render(report, markdown=False):
    table = _md_table if markdown else _text_table
    env, compiled = report["environment"], report["settings"]["compile"]
    h = (lambda n, t: f"{'#' * n} {t}") if markdown else (lambda n, t: f"{'=' * (4 - n)} {t} {'=' * (4 - n)}")
    st = report["settings"]
    out = [h(1, "lenetalex bench") if markdown else "lenetalex bench",
           f"lenetalex {env['lenetalex']} (commit {env['git_commit']}{' dirty' if env.get('git_dirty') else ''}), "
           f"torch {env['torch']} (CUDA {env['cuda']}), threads {env['threads']}; "
           f"{'quick, ' if st['quick'] else ''}min_run_time {st['min_run_time']} s x {st['rounds']} round(s)"
           f"{', --compile' if compiled else ''}"
           f"{', reference with TF32 on CUDA' if st.get('cuda_tf32') else ''}"]
    for dev in report["devices"]:
        out.append("")
        out.append(h(2, f"{dev['device']}: {device_title(dev)}, {dev['dtype']}"))
        if dev.get("skipped"):
            out.append(f"not run: {dev['skipped']}")
            continue
        out.append(limits_line(dev))
        for op in GROUPS.values():
            rows = [r for r in dev["results"] if r["op"] == op]
            if not rows:
                continue
            out += ["", h(3, op)]
            head, cells = model_rows(rows, compiled) if op == "models" else op_rows(rows, compiled)
            out.append(table(head, cells))
            notes = sorted({f"{r['case']} {r['direction']}: {r['note']}" for r in rows if r["status"] == "error"})
            out += [f"  error: {n}" for n in notes]
            out.append(("" if not markdown else "\n") + "summary " + summary_line(op, dev["summary"][op]))
        out += ["", h(3, f"targets ({dev['device']}, {dev['dtype']})")]
        trow = [[t["target"], fmt_x(t["value"]), t["status"], t["detail"]] for t in dev["targets"]]
        out.append(table(["target", "measured", "result", "detail"], trow))
    return "\n".join(out) + "\n"


def write_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)


def write_plot(report, path):
    """Speedup (reference time / fused time) per op and shape, one panel per op."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    panels, missing = [], []
    for op in GROUPS.values():
        rows = [(d, r) for d in report["devices"] for r in d.get("results", []) if r["op"] == op]
        bars = [(f"{d['device']} {r['case']} {r['direction']}", r["speedup"]) for d, r in rows if r.get("speedup")]
        if bars:
            panels.append((op, bars))
        elif rows:
            missing.append(op)
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(8, sum(0.3 * len(b) + 1 for _, b in panels)))
    for ax, (op, bars) in zip(axes[:, 0], panels):
        labels, vals = zip(*bars)
        ax.barh(range(len(vals)), vals, color=["tab:green" if v >= 1 else "tab:red" for v in vals])
        ax.set_yticks(range(len(vals)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([m * 10.0 ** e for e in range(-3, 3) for m in (1, 2, 5)]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_title(f"{op}: speedup of fused over reference (reference time / fused time)", fontsize=9)
    if missing:
        fig.text(0.01, 0.005, "not measured (not available): " + ", ".join(missing), fontsize=7)
    fig.tight_layout(rect=(0, 0.02 if missing else 0, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
