"""Turn harness results into the target verdicts, a Markdown table and the latency-versus-load plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RSS_LIMIT_MB = 150
REQUIRED_DISTINCT_TOKENS = 100_000


def _by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in results if not r.get("failed")}


def _verdict(target: str, met: bool | None, measured: str) -> dict[str, Any]:
    return {"target": target, "met": met, "measured": measured}


def evaluate_targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each met / not met / not measured (None) with the measured ratio."""
    r = _by_name(results)
    iam, o2p, direct, fa = (r.get(n) for n in ("iam-proxy", "oauth2-proxy", "upstream-direct",
                                               "iam-proxy-forward-auth"))
    out = []
    if iam and o2p:
        ratio = iam["rps"] / o2p["rps"]
        out.append(_verdict("iam-proxy throughput >= oauth2-proxy, zero errors", ratio >= 1.0 and iam["errors"] == 0,
                            f"ratio {ratio:.2f} ({iam['rps']:,.0f} vs {o2p['rps']:,.0f} req/s), "
                            f"iam-proxy errors {iam['errors']}"))
    else:
        out.append(_verdict("iam-proxy throughput >= oauth2-proxy, zero errors", None, "not measured"))
    nocache = r.get("iam-proxy-nocache")
    if nocache and o2p:
        ratio = nocache["rps"] / o2p["rps"]
        out.append(_verdict("(variant) iam-proxy-nocache throughput >= oauth2-proxy, zero errors",
                            ratio >= 1.0 and nocache["errors"] == 0,
                            f"ratio {ratio:.2f} ({nocache['rps']:,.0f} vs {o2p['rps']:,.0f} req/s), "
                            f"errors {nocache['errors']}"))
    if iam and iam.get("p99_at_half_peak_ms") is not None:
        p99 = iam["p99_at_half_peak_ms"]
        out.append(_verdict("iam-proxy p99 at half its peak <= 10 ms", p99 <= 10,
                            f"{p99:.2f} ms at {iam['half_peak_rps']:,.0f} req/s (ratio {p99 / 10:.2f} of the limit)"))
    else:
        out.append(_verdict("iam-proxy p99 at half its peak <= 10 ms", None, "not measured"))
    if iam and direct:
        added = iam["light_p50_ms"] - direct["light_p50_ms"]
        out.append(_verdict("iam-proxy adds <= 1 ms to p50 over upstream-direct at light load", added <= 1.0,
                            f"+{added:.3f} ms ({iam['light_p50_ms']:.3f} vs {direct['light_p50_ms']:.3f} ms "
                            f"at {iam['light_rps']:,.0f} req/s)"))
    else:
        out.append(_verdict("iam-proxy adds <= 1 ms to p50 over upstream-direct at light load", None, "not measured"))
    if fa and iam:
        ratio = fa["rps"] / iam["rps"]
        out.append(_verdict("iam-proxy-forward-auth throughput >= 2x iam-proxy", ratio >= 2.0,
                            f"ratio {ratio:.2f} ({fa['rps']:,.0f} vs {iam['rps']:,.0f} req/s)"))
    else:
        out.append(_verdict("iam-proxy-forward-auth throughput >= 2x iam-proxy", None, "not measured"))
    measured = [x for x in r.values() if x["name"].startswith("iam-proxy") and x.get("distinct_tokens")]
    if measured:
        worst = max(measured, key=lambda x: x["rss_max_process_mb"])
        seen = min(x["distinct_tokens"] for x in measured)
        enough = seen >= REQUIRED_DISTINCT_TOKENS
        met = worst["rss_max_process_mb"] <= RSS_LIMIT_MB if enough else None
        out.append(_verdict(f"peak RSS per iam-proxy process <= {RSS_LIMIT_MB} MB after 100,000 distinct tokens",
                            met, f"{worst['rss_max_process_mb']:.0f} MB ({worst['name']}, ratio "
                                 f"{worst['rss_max_process_mb'] / RSS_LIMIT_MB:.2f} of the limit) after "
                                 f"{seen:,} distinct tokens" + ("" if enough else " (too few tokens to judge)")))
    else:
        out.append(_verdict(f"peak RSS per iam-proxy process <= {RSS_LIMIT_MB} MB after 100,000 distinct tokens",
                            None, "not measured"))
    return out


def _fmt(value: Any, pattern: str = "{:,.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def write_markdown(results: list[dict[str, Any]], meta: dict[str, Any], path: Path, plot: Path | None) -> None:
    m = meta["machine"]
    lines = [
        f"# Benchmark results ({meta['mode']} run, {meta['started']})",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gb']} GB, Linux {m['kernel']}; load average "
        f"{meta.get('load_average_at_start', ['?'])[0]:.1f} at the start, {m['load_average'][0]:.1f} at the end. "
        + ", ".join(f"{k} {v}" for k, v in m["tools"].items()) + ".",
        "",
        f"Load: wrk, {meta['plan']['threads']} threads, {meta['plan']['connections']} connections, "
        f"{meta['plan']['repeats']} x {meta['plan']['duration']:g} s per target (median reported); "
        f"{meta['request']}; iam-proxy workers: {meta['iam_workers']}.",
        "",
        "| name | req/s | p50 ms | p99 ms | p99 ms at ½ peak (req/s) | light-load p50 ms | CPU s / 1k req "
        "| RSS MB (sum / max process) | errors | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.get("failed"):
            lines.append(f"| {r['name']} | failed | | | | | | | | {r['failed']} |")
            continue
        half = f"{_fmt(r['p99_at_half_peak_ms'], '{:.2f}')} ({_fmt(r['half_peak_rps'], '{:,.0f}')})"
        rss = f"{r['rss_mb']:.0f} / {r['rss_max_process_mb']:.0f}"
        if r.get("distinct_tokens"):
            rss += f" after {r['distinct_tokens']:,} tokens"
        lines.append(f"| {r['name']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {half} | "
                     f"{r['light_p50_ms']:.3f} | {r['cpu_s_per_1k']:.3f} | {rss} | {r['errors']} | {r['notes']} |")
    lines += ["", "## Targets", "", "| target | verdict | measured |", "|---|---|---|"]
    for t in meta["targets"]:
        verdict = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {verdict} | {t['measured']} |")
    if plot is not None:
        lines += ["", f"![latency versus load]({plot.name})"]
    lines += ["", f"Run took {meta['seconds']:.0f} s.", ""]
    path.write_text("\n".join(lines))


def write_plot(results: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax99, ax50) = plt.subplots(1, 2, figsize=(12, 4.8))
    for r in results:
        if r.get("failed") or not r.get("curve"):
            continue
        xs = [c["rps"] for c in r["curve"]] + [r["rps"]]
        ax99.plot(xs, [c["p99_ms"] for c in r["curve"]] + [r["p99_ms"]], marker="o", label=r["name"])
        ax50.plot(xs, [c["p50_ms"] for c in r["curve"]] + [r["p50_ms"]], marker="o", label=r["name"])
    for ax, what in ((ax99, "p99"), (ax50, "p50")):
        ax.set_xlabel("achieved requests per second (log)")
        ax.set_xscale("log")
        ax.set_ylabel(f"{what} latency (ms, log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax99.legend(fontsize=8)
    m = meta["machine"]
    fig.suptitle(f"Latency versus load (paced wrk; last point = closed loop at {meta['plan']['connections']} "
                 f"connections) - {m['cores']} cores, {m['cpu_model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
