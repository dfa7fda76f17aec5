"""The run report a person opens: Table 6 metrics per device, plots, and run-to-run comparison (Table 7).

``write_report(run_dir)`` reads ``metrics.jsonl`` and ``summary.json`` and writes ``report.md``, ``report.html``
and ``plots/*.png`` (accuracy per device per round; bytes and energy per link type per round; latency
distributions; epsilon per round). ``compare_runs(dirs)`` puts finished runs side by side.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runner import read_metrics, read_summary

__all__ = ["write_report", "compare_runs", "comparison_rows", "COMPARE_COLUMNS"]

LINKS = ("uplink", "downlink", "d2d")

#: (header, summary key or callable) of the comparison table
COMPARE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "name"), ("paradigm", "paradigm"), ("aggregator", "aggregator"),
    ("accuracy", "mean_final_accuracy"), ("pers. gain", "mean_personalization_gain"),
    ("uplink kB", "uplink_kb"), ("downlink kB", "downlink_kb"), ("D2D kB", "d2d_kb"),
    ("energy J", "total_joules"), ("round latency s", "mean_round_latency_s"), ("epsilon", "epsilon"),
    ("forgetting", "mean_forgetting"), ("MIA AUC", "mean_mia_auc"),
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.3f}"
    return str(v)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _plots(run_dir: Path, rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
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
        ys = [r["devices"][d]["accuracy_global"] for r in rows]
        ax.plot(rounds, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=d)
    ax.set(xlabel="round", ylabel="accuracy (model held after the round)", title="Accuracy per device per round")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(pdir / "accuracy.png", dpi=90)
    plt.close(fig)
    out.append(("Accuracy per device per round", "plots/accuracy.png"))

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
    ("device", None), ("profile", "profile"), ("accuracy", "final_accuracy"),
    ("pers. gain", "personalization_gain"), ("needs pers.", "personalization_necessity"),
    ("latency ms", "inference_latency_ms"), ("train s", "train_time_s"), ("storage MB", "storage_mb"),
    ("modules", "active_modules"),
    ("sent kB", "bytes_sent"), ("recv kB", "bytes_received"), ("compute J", "compute_joules"),
    ("comm J", "comm_joules"), ("battery", "battery_frac"), ("rounds in", "rounds_participated"),
    ("missed", "rounds_missed_deadline"), ("forgetting", "forgetting"), ("MIA AUC", "mia_auc"),
)


def _device_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for d, v in summary["devices"].items():
        row: list[Any] = []
        for _, key in DEVICE_COLUMNS:
            if key is None:
                row.append(d)
            elif key in ("bytes_sent", "bytes_received"):
                row.append(v[key] / 1e3)
            else:
                row.append(v.get(key))
        rows.append(row)
    return rows


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and plots for a finished run; returns the Markdown path."""
    rd = Path(run_dir)
    rows, summary = read_metrics(rd), read_summary(rd)
    plots = _plots(rd, rows)
    headers = [h for h, _ in DEVICE_COLUMNS]
    drows = _device_rows(summary)
    overview = [("paradigm", summary["paradigm"]), ("aggregator", summary["aggregator"]),
                ("rounds", summary["rounds"]), ("mean final accuracy", summary["mean_final_accuracy"]),
                ("mean personalization gain", summary["mean_personalization_gain"]),
                ("personalization necessity rate", summary.get("personalization_necessity_rate")),
                ("total bytes", summary["total_bytes"]), ("device energy (J)", summary["total_joules"]),
                ("mean round latency (simulated s)", summary["mean_round_latency_s"]),
                ("epsilon", summary["epsilon"]), ("mean forgetting", summary["mean_forgetting"]),
                ("membership-inference AUC", summary["mean_mia_auc"])]
    md = [f"# xrfed run: {summary['name']}", "", _md_table(["figure", "value"], overview), "",
          "## Table 6 metrics per device", "", _md_table(headers, drows), "",
          "*Accuracy: model each device holds at the end (global/consensus + personal parts). Pers. gain: "
          "accuracy after local training minus before it, averaged over rounds. Needs pers.: the global model "
          "is below 90 % on that device. Modules: encoders + task heads the device trains and shares. Latency: measured inference time per sample. Train s: simulated "
          "on-device time (profile GFLOP/s). MIA AUC: loss-threshold membership inference (0.5 = no leakage).*",
          "", "## Per link type", "",
          _md_table(["link", "kB", "J"], [[lt, summary["links"][lt]["bytes"] / 1e3, summary["links"][lt]["joules"]]
                                           for lt in LINKS]), ""]
    for title, path in plots:
        md += [f"## {title}", "", f"![{title}]({path})", ""]
    md_path = rd / "report.md"
    md_path.write_text("\n".join(md))

    def html_table(hs: Sequence[str], rs: Sequence[Sequence[Any]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in hs)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rs)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [f"<h1>xrfed run: {html.escape(summary['name'])}</h1>", html_table(["figure", "value"], overview),
             "<h2>Table 6 metrics per device</h2>", html_table(headers, drows),
             "<h2>Per link type</h2>",
             html_table(["link", "kB", "J"], [[lt, summary["links"][lt]["bytes"] / 1e3,
                                               summary["links"][lt]["joules"]] for lt in LINKS])]
    for title, path in plots:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{html.escape(path)}' alt='{html.escape(title)}'>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}")
    (rd / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>xrfed "
                                    f"{html.escape(summary['name'])}</title><style>{style}</style></head><body>"
                                    + "".join(parts) + "</body></html>")
    return md_path


def comparison_rows(run_dirs: Sequence[str | Path]) -> list[list[Any]]:
    rows = []
    for rd in run_dirs:
        s = read_summary(rd)
        flat = {**s, **{f"{lt}_kb": s["links"][lt]["bytes"] / 1e3 for lt in LINKS}}
        rows.append([flat.get(key) for _, key in COMPARE_COLUMNS])
    return rows


def compare_runs(run_dirs: Sequence[str | Path]) -> str:
    """A Markdown table of finished runs side by side (the Table 7 trade-offs)."""
    return _md_table([h for h, _ in COMPARE_COLUMNS], comparison_rows(run_dirs))
