"""The run report a person opens: the result next to its baselines, Table 6 metrics per device, plots, and
run-to-run comparison (Table 7).

``write_report(run_dir)`` reads a run directory (:mod:`federation.rundir`) and writes ``report.md``,
``report.html`` and ``plots/*.png``. The headline is **macro balanced accuracy** (per task, the mean recall over
the classes present; then the mean over tasks) on each device's held-out data, next to the baselines on the
same data: majority class, label persistence, the pretrained model -- and, in a comparison, local-only training.
A multi-seed run (``seeds: [..]``) reports every figure as mean ± 95 % confidence interval over the seeds
(:func:`summarise_seeds`). ``compare_runs(dirs)`` puts finished runs side by side.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .rundir import read_metrics, read_summary, seed_dirs
from .stats import Estimate, mean_ci

__all__ = ["write_report", "compare_runs", "comparison_rows", "COMPARE_COLUMNS", "summarise_seeds", "headline",
           "write_comparison"]

LINKS = ("uplink", "downlink", "d2d")
BASELINES = ("majority", "persistence", "pretrained")

#: (header, summary key) of the comparison table
COMPARE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "name"), ("paradigm", "paradigm"), ("aggregator", "aggregator"), ("seeds", "n_seeds"),
    ("bal. acc.", "balanced_accuracy"), ("accuracy", "accuracy"), ("global bal. acc.", "global_balanced_accuracy"),
    ("pers. gain", "personalization_gain"), ("local-only", "baseline_local"), ("pretrained", "baseline_pretrained"),
    ("majority", "baseline_majority"), ("persistence", "baseline_persistence"),
    ("uplink kB", "uplink_kb"), ("downlink kB", "downlink_kb"), ("D2D kB", "d2d_kb"),
    ("energy J", "total_joules"), ("round latency s", "mean_round_latency_s"), ("epsilon", "epsilon"),
    ("forgetting", "mean_forgetting"), ("MIA AUC", "mean_mia_auc"),
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict) and "mean" in v:  # an Estimate
        m, lo, hi = v["mean"], v.get("lo"), v.get("hi")
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return "-"
        if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
            return _fmt(float(m))
        return f"{_fmt(float(m))} ± {_fmt((hi - lo) / 2)}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.3f}"
    return str(v)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _html_table(hs: Sequence[str], rs: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in hs)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rs)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline(summary: dict[str, Any]) -> list[list[Any]]:
    """Rows (what, macro balanced accuracy, accuracy) of the result and its baselines on the same held-out data."""
    rows: list[list[Any]] = [[f"this run ({summary['paradigm']}, the model each device runs)",
                              summary["balanced_accuracy"], summary["accuracy"]],
                             ["  its global model (no personal modules)", summary["global_balanced_accuracy"], None]]
    local = summary.get("local_baseline")
    if local is not None:
        rows.append([f"local-only training (same devices and rounds, no communication; {local['run']}/)",
                     local["balanced_accuracy"], None])
    names = {"pretrained": "pretrained foundation model (no tuning)", "majority": "majority class of the device",
             "persistence": "label persistence (last training label)"}
    for b in BASELINES:
        fig = summary["baselines"][b]
        rows.append([names[b], fig["balanced_accuracy"], fig["accuracy"]])
    return rows


def _local_sentence(summary: dict[str, Any]) -> str:
    """This run minus local-only training, paired over the seeds, in words."""
    local = summary.get("local_baseline")
    if local is None:
        return ""
    d = estimate_of(local["difference"])
    if d is None or d.n == 0:
        return ""
    ci = "" if d.n < 2 else f", 95 % CI [{d.lo:+.3f}, {d.hi:+.3f}], sign on every seed: {'yes' if d.sign_holds else 'no'}"
    return f"Minus local-only training (macro balanced accuracy, paired over {d.n} seed{'s' * (d.n != 1)}): {d.mean:+.3f}{ci}."


# -- plots -------------------------------------------------------------------------------------------------
def _plots(run_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pdir = run_dir / "plots"
    pdir.mkdir(exist_ok=True)
    out: list[tuple[str, str]] = []
    rounds = [r["round"] for r in rows]
    devices = list(rows[0]["devices"]) if rows else []

    fig, ax = plt.subplots(figsize=(7, 4))
    for d in devices:
        ys = [r["devices"][d].get("balanced_accuracy") for r in rows]
        line, = ax.plot(rounds, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=d)
        pre = summary["devices"].get(d, {}).get("baselines", {}).get("pretrained", {}).get("balanced_accuracy")
        if pre is not None:
            ax.axhline(pre, color=line.get_color(), ls=":", lw=0.8)
    ax.set(xlabel="round", ylabel="macro balanced accuracy (held-out)",
           title="Per device per round (dotted: pretrained model)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(pdir / "accuracy.png", dpi=90)
    plt.close(fig)
    out.append(("Balanced accuracy per device per round", "plots/accuracy.png"))

    tasks = list(summary.get("per_task", {}))
    if tasks:
        fig, ax = plt.subplots(figsize=(8, 4))
        cols = ["model", *BASELINES]
        w = 0.8 / len(cols)
        for i, c in enumerate(cols):
            ys = [summary["per_task"][t].get(c) for t in tasks]
            ax.bar(np.arange(len(tasks)) + i * w, [np.nan if y is None else y for y in ys], w,
                   label="this run" if c == "model" else c)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - w / 2, tasks, rotation=20, fontsize=8)
        ax.set(ylabel="balanced accuracy (held-out)", title="Per task: the run and its baselines", ylim=(0, 1))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(pdir / "tasks.png", dpi=90)
        plt.close(fig)
        out.append(("Per task, next to the baselines", "plots/tasks.png"))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    bottom_b, bottom_j = np.zeros(len(rows)), np.zeros(len(rows))
    for lt in LINKS:
        b = np.array([r["links"][lt]["bytes"] / 1e3 for r in rows])
        j = np.array([r["links"][lt]["joules"] for r in rows])
        a1.bar(rounds, b, bottom=bottom_b, label=lt)
        a2.bar(rounds, j, bottom=bottom_j, label=lt)
        bottom_b += b
        bottom_j += j
    a1.set(xlabel="round", ylabel="kB", title="Bytes per link type")
    a2.set(xlabel="round", ylabel="J (device side)", title="Radio energy per link type")
    a1.legend()
    a2.legend()
    fig.tight_layout()
    fig.savefig(pdir / "links.png", dpi=90)
    plt.close(fig)
    out.append(("Bytes and energy per link type", "plots/links.png"))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    lat = [[r["devices"][d]["inference_latency_ms"] for r in rows if r["devices"][d]["inference_latency_ms"]
            is not None] for d in devices]
    a1.boxplot([x if x else [np.nan] for x in lat])
    a1.set_xticks(range(1, len(devices) + 1), devices)
    a1.set(ylabel="ms per sample", title="Inference latency per device")
    a1.tick_params(axis="x", rotation=60, labelsize=7)
    a2.hist([r["round_latency_s"] for r in rows], bins=max(3, min(20, len(rows))))
    a2.set(xlabel="simulated s", ylabel="rounds", title="Round latency")
    fig.tight_layout()
    fig.savefig(pdir / "latency.png", dpi=90)
    plt.close(fig)
    out.append(("Latency distribution", "plots/latency.png"))

    eps = [r.get("epsilon") for r in rows]
    if any(e is not None for e in eps):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(rounds, [np.nan if e is None else e for e in eps], marker="o")
        ax.set(xlabel="round", ylabel="epsilon", title="Privacy spent (RDP accountant)")
        fig.tight_layout()
        fig.savefig(pdir / "epsilon.png", dpi=90)
        plt.close(fig)
        out.append(("Differential privacy: epsilon per round", "plots/epsilon.png"))
    return out


DEVICE_COLUMNS = (
    ("device", None), ("profile", "profile"), ("bal. acc.", "balanced_accuracy"), ("accuracy", "accuracy"),
    ("global bal. acc.", "global_balanced_accuracy"), ("pers. gain", "personalization_gain"),
    ("pretrained", "pretrained"), ("majority", "majority"), ("persistence", "persistence"),
    ("latency ms", "inference_latency_ms"), ("train s", "train_time_s"), ("storage MB", "storage_mb"),
    ("modules", "active_modules"), ("sent kB", "bytes_sent"), ("recv kB", "bytes_received"),
    ("compute J", "compute_joules"), ("comm J", "comm_joules"), ("battery", "battery_frac"),
    ("rounds in", "rounds_participated"), ("missed", "rounds_missed_deadline"), ("forgetting", "forgetting"),
    ("MIA AUC", "mia_auc"), ("MIA TPR@0.1", "mia_tpr_at_fpr_0.1"), ("MIA AUC raw", "mia_auc_uncalibrated"),
    ("MIA AUC device", "mia_auc_device_model"),
)


def _device_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for d, v in summary["devices"].items():
        row: list[Any] = []
        for _, key in DEVICE_COLUMNS:
            if key is None:
                row.append(d)
            elif key in BASELINES:
                row.append(v["baselines"][key]["balanced_accuracy"])
            elif key in ("bytes_sent", "bytes_received"):
                row.append(v[key] / 1e3)
            else:
                row.append(v.get(key))
        rows.append(row)
    return rows


def _task_rows(summary: dict[str, Any]) -> list[list[Any]]:
    return [[t, v.get("model"), *(v.get(b) for b in BASELINES)] for t, v in summary.get("per_task", {}).items()]


_NOTE = ("*Held-out data: the end of each phase, separated from the training steps by a guard gap (see Split). "
         "Bal. acc.: per task the mean recall over the classes present, then the mean over the device's tasks; "
         "a constant answer scores at most 1 / (classes present), so near-constant labels cannot carry it. "
         "Global: the aggregated shared tensors alone (no personal modules). Pers. gain: the device's model minus "
         "the global model on the same data. Pretrained: the foundation model before any tuning. Majority / "
         "persistence: the device's most frequent / last training label. Train s: simulated on-device time "
         "(profile GFLOP/s). MIA: membership inference against the global model (what leaves the device), members "
         "= training steps, non-members = held-out steps, score = its loss minus the pretrained model's on the same "
         "sample (AUC 0.5, TPR@0.1 = 0.1: no leakage); raw: the uncalibrated loss threshold; device: the same "
         "attack on the device's own model, which never leaves it.*")


def _write(rd: Path, title: str, sections: list[tuple[str, str, str]], plots: list[tuple[str, str]]) -> Path:
    """``sections``: (heading, markdown body, html body)."""
    md = [f"# {title}", ""]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for head, mdb, htb in sections:
        md += [f"## {head}", "", mdb, ""] if head else [mdb, ""]
        parts.append((f"<h2>{html.escape(head)}</h2>" if head else "") + htb)
    for t, path in plots:
        md += [f"## {t}", "", f"![{t}]({path})", ""]
        parts.append(f"<h2>{html.escape(t)}</h2><img src='{html.escape(path)}' alt='{html.escape(t)}'>")
    md_path = rd / "report.md"
    md_path.write_text("\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:first-child{text-align:left}")
    (rd / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                                    f"</title><style>{style}</style></head><body>" + "".join(parts)
                                    + "</body></html>")
    return md_path


def _split_section(summary: dict[str, Any]) -> tuple[str, str, str]:
    """The held-out split in words, and the labels' measured persistence next to the guard gap."""
    text = summary.get("split") or "-"
    pers = summary.get("label_persistence_s")
    guard = summary.get("guard_s")
    if pers:
        parts = [f"{t} {'constant per device' if v is None else f'{v:.1f} s'}" for t, v in pers.items()]
        longer = [t for t, v in pers.items() if v is not None and guard is not None and v >= guard]
        text += (". Measured label persistence (lag at which a label no longer predicts itself beyond chance, "
                 "pooled over the devices): " + ", ".join(parts) + ". ")
        text += (f"The guard of {guard:g} s exceeds every decorrelating label's persistence." if not longer else
                 f"Labels persisting at least as long as the guard: {', '.join(longer)}.")
    return "Split", text, f"<p>{html.escape(text)}</p>"


def _mia_section(summary: dict[str, Any]) -> tuple[str, str, str]:
    """What the membership-inference figures measure, in one sentence (written by the runner)."""
    text = summary.get("mia_audit") or "-"
    return "Membership inference", text, f"<p>{html.escape(text)}</p>"


def _sec(head: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, str, str]:
    return head, _md_table(headers, rows), _html_table(headers, rows)


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html (and plots for a single run) for a finished run; returns the Markdown path."""
    rd = Path(run_dir)
    summary = read_summary(rd)
    if summary.get("kind") == "multi-seed":
        return _write_seed_report(rd, summary)
    rows = read_metrics(rd)
    plots = _plots(rd, rows, summary)
    overview = [("paradigm", summary["paradigm"]), ("aggregator", summary["aggregator"]),
                ("seed", summary["seed"]), ("rounds", summary["rounds"]),
                ("total bytes", summary["total_bytes"]), ("device energy (J)", summary["total_joules"]),
                ("mean round latency (simulated s)", summary["mean_round_latency_s"]),
                ("epsilon", summary["epsilon"]), ("mean forgetting (balanced accuracy)", summary["mean_forgetting"]),
                ("membership-inference AUC (global model, calibrated)", summary["mean_mia_auc"]),
                ("membership-inference TPR at FPR 0.1", summary.get("mean_mia_tpr_at_fpr_0.1")),
                ("membership-inference AUC, raw loss threshold", summary.get("mean_mia_auc_uncalibrated")),
                ("membership-inference AUC, device model (never leaves the device)",
                 summary.get("mean_mia_auc_device_model"))]
    sections = [
        _sec("Result and baselines (held-out, mean over devices)", ["", "macro balanced accuracy", "accuracy"],
             headline(summary)),
        ("", _local_sentence(summary), f"<p>{html.escape(_local_sentence(summary))}</p>"),
        _split_section(summary),
        _sec("Per task (balanced accuracy, mean over the devices running it)",
             ["task", "this run", *BASELINES], _task_rows(summary)),
        _sec("Run", ["figure", "value"], overview),
        _mia_section(summary),
        _sec("Table 6 metrics per device", [h for h, _ in DEVICE_COLUMNS], _device_rows(summary)),
        ("", _NOTE, f"<p><em>{html.escape(_NOTE.strip('*'))}</em></p>"),
        _sec("Per link type", ["link", "kB", "J"],
             [[lt, summary["links"][lt]["bytes"] / 1e3, summary["links"][lt]["joules"]] for lt in LINKS]),
    ]
    return _write(rd, f"xrfed run: {summary['name']}", sections, plots)


# -- several seeds -------------------------------------------------------------------------------------------
def _est(values: Sequence[Any]) -> dict[str, Any]:
    """Mean and CI over the seeds; ``values`` stays aligned with the seeds (a missing figure is NaN there)."""
    return mean_ci([None if v is None else float(v) for v in values]).to_dict()


def summarise_seeds(run_dir: str | Path) -> dict[str, Any]:
    """Mean and 95 % t-interval over the seeds of every headline figure of a multi-seed run."""
    rd = Path(run_dir)
    subs = [read_summary(p) for p in seed_dirs(rd)]
    if not subs:
        from .errors import CheckpointError

        raise CheckpointError(f"{rd}: no finished seed runs ({rd}/seed-*/summary.json)")

    def est(get: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        return _est([get(s) for s in subs])

    first = subs[0]
    tasks = sorted({t for s in subs for t in s.get("per_task", {})})
    return {
        "kind": "multi-seed",
        "name": first["name"], "paradigm": first["paradigm"], "aggregator": first["aggregator"],
        "seeds": [s["seed"] for s in subs], "rounds": first["rounds"], "split": first.get("split"),
        "guard_s": first.get("guard_s"), "label_persistence_s": first.get("label_persistence_s"),
        "balanced_accuracy": est(lambda s: s["balanced_accuracy"]),
        "accuracy": est(lambda s: s["accuracy"]),
        "global_balanced_accuracy": est(lambda s: s["global_balanced_accuracy"]),
        "personalization_gain": est(lambda s: s["personalization_gain"]),
        "baselines": {b: {k: _est([s["baselines"][b][k] for s in subs]) for k in ("balanced_accuracy", "accuracy")}
                      for b in BASELINES},
        "per_task": {t: {c: _est([s["per_task"].get(t, {}).get(c) for s in subs]) for c in ("model", *BASELINES)}
                     for t in tasks},
        "links": {lt: {"bytes": _est([s["links"][lt]["bytes"] for s in subs])} for lt in LINKS},
        "total_bytes": est(lambda s: s["total_bytes"]),
        "total_joules": est(lambda s: s["total_joules"]),
        "mean_round_latency_s": est(lambda s: s["mean_round_latency_s"]),
        "epsilon": est(lambda s: s["epsilon"]),
        "mean_forgetting": est(lambda s: s["mean_forgetting"]),
        "mean_mia_auc": est(lambda s: s["mean_mia_auc"]),
        "mean_mia_tpr_at_fpr_0.1": est(lambda s: s.get("mean_mia_tpr_at_fpr_0.1")),
        "mean_mia_auc_uncalibrated": est(lambda s: s.get("mean_mia_auc_uncalibrated")),
        "mean_mia_auc_device_model": est(lambda s: s.get("mean_mia_auc_device_model")),
        "mia_audit": first.get("mia_audit"),
        "runs": [p.name for p in seed_dirs(rd)],
    }


def _write_seed_report(rd: Path, summary: dict[str, Any]) -> Path:
    n = len(summary["seeds"])
    sections = [
        ("", f"{n} seeds ({', '.join(map(str, summary['seeds']))}); every figure is the mean over seeds ± the "
             "half-width of its 95 % Student-t confidence interval. Each seed's own report is in its "
             f"directory ({', '.join(summary['runs'])}).", f"<p>{n} seeds; mean ± 95 % CI half-width.</p>"),
        _sec("Result and baselines (held-out, mean over devices)", ["", "macro balanced accuracy", "accuracy"],
             headline(summary)),
        ("", _local_sentence(summary), f"<p>{html.escape(_local_sentence(summary))}</p>"),
        _split_section(summary),
        _sec("Per task (balanced accuracy)", ["task", "this run", *BASELINES],
             [[t, v["model"], *(v[b] for b in BASELINES)] for t, v in summary["per_task"].items()]),
        _sec("Run", ["figure", "value"],
             [("paradigm", summary["paradigm"]), ("aggregator", summary["aggregator"]), ("rounds", summary["rounds"]),
              ("personalization gain", summary["personalization_gain"]), ("total bytes", summary["total_bytes"]),
              ("device energy (J)", summary["total_joules"]),
              ("mean round latency (simulated s)", summary["mean_round_latency_s"]),
              ("epsilon", summary["epsilon"]), ("mean forgetting", summary["mean_forgetting"]),
              ("membership-inference AUC (global model, calibrated)", summary["mean_mia_auc"]),
              ("membership-inference TPR at FPR 0.1", summary.get("mean_mia_tpr_at_fpr_0.1")),
              ("membership-inference AUC, raw loss threshold", summary.get("mean_mia_auc_uncalibrated")),
              ("membership-inference AUC, device model", summary.get("mean_mia_auc_device_model"))]),
        _mia_section(summary),
    ]
    return _write(rd, f"xrfed run: {summary['name']} ({n} seeds)", sections, [])


# -- comparison ----------------------------------------------------------------------------------------------
def _flat(s: dict[str, Any]) -> dict[str, Any]:
    flat = dict(s)
    multi = s.get("kind") == "multi-seed"
    flat["n_seeds"] = len(s["seeds"]) if multi else 1
    for lt in LINKS:
        b = s["links"][lt]["bytes"]
        flat[f"{lt}_kb"] = ({**b, **{k: None if b[k] is None else b[k] / 1e3 for k in ("mean", "lo", "hi")}}
                            if multi else b / 1e3)
    for b in BASELINES:
        flat[f"baseline_{b}"] = s["baselines"][b]["balanced_accuracy"]
    local = s.get("local_baseline")
    flat["baseline_local"] = local["balanced_accuracy"] if local else None
    return flat


def comparison_rows(run_dirs: Sequence[str | Path]) -> list[list[Any]]:
    return [[_flat(read_summary(rd)).get(key) for _, key in COMPARE_COLUMNS] for rd in run_dirs]


def compare_runs(run_dirs: Sequence[str | Path]) -> str:
    """A Markdown table of finished runs side by side (the Table 7 trade-offs), with their baselines."""
    return _md_table([h for h, _ in COMPARE_COLUMNS], comparison_rows(run_dirs))


def estimate_of(value: Any) -> Estimate | None:
    """A summary figure as an :class:`Estimate` (a single run's float becomes n = 1)."""
    if value is None:
        return None
    if isinstance(value, dict):
        def f(x: Any) -> float:
            return math.nan if x is None else float(x)

        return Estimate(f(value["mean"]), f(value["lo"]), f(value["hi"]), value["n"], value.get("level", 0.95),
                        value.get("sign_holds"), tuple(f(v) for v in value.get("values", ())))
    return Estimate(float(value), math.nan, math.nan, 1)


def write_comparison(out_dir: str | Path, runs: Mapping[str, str | Path], extra_md: str = "") -> Path:
    """``comparison.md``/``comparison.html`` and ``comparison.png`` for finished runs (label -> run directory): the
    comparison table, ``extra_md`` (e.g. paired differences), and one plot of every run's macro balanced accuracy
    (the model each device runs and the global model, mean with its 95 % CI) against the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sums = {k: read_summary(v) for k, v in runs.items()}
    table = compare_runs(list(runs.values()))

    def est(v: Any) -> Estimate:
        e = estimate_of(v)
        return e if e is not None else Estimate(math.nan, math.nan, math.nan, 0)

    fig, ax = plt.subplots(figsize=(8, 4.2))
    x = np.arange(len(sums))
    for off, key, label in ((-0.18, "balanced_accuracy", "the model each device runs"),
                            (0.18, "global_balanced_accuracy", "global model (no personal modules)")):
        es = [est(s[key]) for s in sums.values()]
        err = [[e.mean - e.lo if e.n > 1 else 0 for e in es], [e.hi - e.mean if e.n > 1 else 0 for e in es]]
        ax.bar(x + off, [e.mean for e in es], 0.34, yerr=err, capsize=3, label=label)
    first = next(iter(sums.values()))
    for b, style in zip(BASELINES, (":", "--", "-."), strict=True):
        ax.axhline(est(first["baselines"][b]["balanced_accuracy"]).mean, color="grey", ls=style, lw=1, label=b)
    ax.set_xticks(x, list(sums))
    ax.set(ylabel="macro balanced accuracy (held-out)", ylim=(0, 1),
           title="Paradigms on the same held-out data (mean and 95 % CI over seeds)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=90)
    plt.close(fig)
    md = "\n".join(["# xrfed comparison", "", table, "", extra_md, "", "![comparison](comparison.png)", ""])
    (out / "comparison.md").write_text(md)
    rows = comparison_rows(list(runs.values()))
    body = _html_table([h for h, _ in COMPARE_COLUMNS], rows)
    extra_html = "".join(f"<pre>{html.escape(extra_md)}</pre>" if extra_md else "")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}")
    links = "".join(f"<li><a href='{html.escape(str(Path(v).name))}/report.html'>{html.escape(k)}</a></li>"
                    for k, v in runs.items())
    (out / "comparison.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>xrfed comparison</title><style>{style}</style>"
        f"</head><body><h1>xrfed comparison</h1>{body}{extra_html}<img src='comparison.png' alt='comparison'>"
        f"<h2>Reports</h2><ul>{links}</ul></body></html>")
    return out / "comparison.md"
