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


def _light_cpu(r: dict[str, Any]) -> str:
    cpu = r.get("light_cpu_ms_per_request")
    return f" ({cpu:.3f})" if cpu is not None else ""


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
        "| name | req/s | p50 ms | p99 ms | p99 ms at ½ peak (req/s) | light-load p50 ms (CPU ms/req) | CPU s / 1k req "
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
                     f"{r['light_p50_ms']:.3f}{_light_cpu(r)} | {r['cpu_s_per_1k']:.3f} | {rss} | {r['errors']} | {r['notes']} |")
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


# ---------------------------------------------------------------- issue 20's targets (targets.json)

# Row names are stable (tests and docs refer to them); the numbers behind each go in its note.
THROUGHPUT_NOCACHE = "throughput, distinct tokens, decision cache off, vs oauth2-proxy"
THROUGHPUT_CACHE = "throughput, distinct tokens, decision cache on, vs oauth2-proxy"
P99_HALF_PEAK = "p99 at half of each one's own peak, uncached, vs oauth2-proxy"
LIGHT_ADDED = "median added over a direct call at light load"
DECISION = "embedded decision, Python call included ({engine})"
WORKERS = "2 workers vs 1 worker on 2 cores"
PER_CORE = "{mode} decisions per second per core, no front cache"
DECISION_ENGINES = ("embedded", "opa-lib", "opa-wasm", "opa rest")
# The throughput rows again with engine embedded (rego-cpp: the fallback of `policy.engine: auto` where
# OPA's library cannot be built), informative beside the default's.
REGO_CPP = " (engine embedded, rego-cpp)"
DEFAULT_ENGINE = "opa-lib"  # what policy.engine auto picks where `make bench` has built OPA's library
PER_CORE_TARGETS = (("forward-auth", "iam-proxy-forward-auth-nocache"),
                    ("ext_authz gRPC", "envoy-ext-authz-grpc"), ("ext_authz HTTP", "envoy-ext-authz-http"))


def issue_target_names() -> list[str]:
    """Every row `issue_targets` writes, in order."""
    return ([THROUGHPUT_NOCACHE, THROUGHPUT_CACHE, P99_HALF_PEAK, LIGHT_ADDED]
            + [DECISION.format(engine=e) for e in DECISION_ENGINES] + [WORKERS]
            + [PER_CORE.format(mode=m) for m, _ in PER_CORE_TARGETS]
            + [THROUGHPUT_NOCACHE + REGO_CPP, THROUGHPUT_CACHE + REGO_CPP, WORKERS + REGO_CPP])


def _row(name: str, value: float | None, target: str, met: bool, unit: str, note: str) -> dict[str, Any]:
    return {"name": name, "value": None if value is None else round(value, 3), "target": target,
            "met": bool(met) and value is not None, "unit": unit, "note": note}


def _missing(names: tuple[str, ...] | list[str], r: dict[str, dict[str, Any]], failed: dict[str, str]) -> str:
    why = []
    for n in names:
        if n in failed:
            why.append(f"{n} failed: {failed[n]}")
        elif n not in r:
            why.append(f"{n} not run")
    return "not measured in this run: " + "; ".join(why)


def _errors(*rows: dict[str, Any]) -> str:
    bad = [f"{x['name']} had {x['errors']} errors" for x in rows if x.get("errors")]
    return "; " + ", ".join(bad) + " (an error fails the target)" if bad else ""


def _throughput_rows(r: dict[str, dict[str, Any]], failed: dict[str, str], token_mix: int, suffix: str,
                     nocache: str, cache: str) -> list[dict[str, Any]]:
    rows = []
    o2p = r.get("oauth2-proxy-mix")
    for name, iam_name, limit in ((THROUGHPUT_NOCACHE + suffix, nocache, 1.0), (THROUGHPUT_CACHE + suffix, cache, 1.3)):
        iam = r.get(iam_name)
        if iam and o2p:
            ratio = iam["rps"] / o2p["rps"]
            rows.append(_row(name, ratio, f">= {limit:.1f}x", ratio >= limit and not (iam["errors"] or o2p["errors"]),
                             "x", f"{iam_name} {iam['rps']:,.0f} vs oauth2-proxy-mix {o2p['rps']:,.0f} req/s, "
                                  f"{token_mix:,} distinct tokens in turn" + _errors(iam, o2p)))
        else:
            rows.append(_row(name, None, f">= {limit:.1f}x", False, "x",
                             _missing((iam_name, "oauth2-proxy-mix"), r, failed)))
    return rows


def _workers_row(r: dict[str, dict[str, Any]], failed: dict[str, str], name: str, one_name: str,
                 two_name: str) -> dict[str, Any]:
    one, two = r.get(one_name), r.get(two_name)
    if one and two:
        ratio = two["rps"] / one["rps"]
        return _row(name, ratio, ">= 1.6x", ratio >= 1.6, "x",
                    f"{two_name} {two['rps']:,.0f} req/s (2 workers) vs "
                    f"{one['rps']:,.0f} (1 worker); wrk shares the 2 cores (not pinned apart)")
    return _row(name, None, ">= 1.6x", False, "x", _missing((one_name, two_name), r, failed))


def issue_targets(results: list[dict[str, Any]], decision: dict[str, Any] | None,
                  token_mix: int) -> list[dict[str, Any]]:
    """Issue 20's table: one row per target with `name`, `value`, `target`, `met` (false when not
    measured, then `value` is null), the `unit` and a `note` saying what was compared."""
    r = _by_name(results)
    failed = {x["name"]: x["failed"] for x in results if x.get("failed")}
    rows: list[dict[str, Any]] = []

    o2p = r.get("oauth2-proxy-mix")
    rows += _throughput_rows(r, failed, token_mix, "", "iam-proxy-mix-nocache", "iam-proxy-mix")
    iam = r.get("iam-proxy-mix-nocache")
    if iam and o2p and iam.get("p99_at_half_peak_ms") is not None and o2p.get("p99_at_half_peak_ms") is not None:
        mine, theirs = iam["p99_at_half_peak_ms"], o2p["p99_at_half_peak_ms"]
        rows.append(_row(P99_HALF_PEAK, mine, f"<= {theirs:.2f} ms (oauth2-proxy-mix)", mine <= theirs and not iam["errors"],
                         "ms", f"iam-proxy-mix-nocache {mine:.2f} ms at {iam['half_peak_rps']:,.0f} req/s; "
                               f"oauth2-proxy-mix {theirs:.2f} ms at {o2p['half_peak_rps']:,.0f} req/s" + _errors(iam)))
    else:
        rows.append(_row(P99_HALF_PEAK, None, "<= oauth2-proxy-mix's", False, "ms",
                         _missing(("iam-proxy-mix-nocache", "oauth2-proxy-mix"), r, failed)
                         + ("" if not (iam and o2p) else "; no curve point at half of the peak")))

    iam, direct, plain_o2p = r.get("iam-proxy"), r.get("upstream-direct"), r.get("oauth2-proxy-mix")
    if iam and direct:
        added = iam["light_p50_ms"] - direct["light_p50_ms"]
        o2p_note = (f"; oauth2-proxy-mix +{plain_o2p['light_p50_ms'] - direct['light_p50_ms']:.3f} ms"
                    if plain_o2p else "")
        rows.append(_row(LIGHT_ADDED, added, "<= +1.0 ms", added <= 1.0, "ms",
                         f"iam-proxy (defaults, one token) p50 {iam['light_p50_ms']:.3f} ms vs upstream-direct "
                         f"{direct['light_p50_ms']:.3f} ms at {iam['light_rps']:,.0f} req/s{o2p_note}"))
    else:
        rows.append(_row(LIGHT_ADDED, None, "<= +1.0 ms", False, "ms", _missing(("iam-proxy", "upstream-direct"), r, failed)))

    for engine in DECISION_ENGINES:
        name = DECISION.format(engine=engine)
        scope = "the target" if engine == DEFAULT_ENGINE else f"informative: the target applies to {DEFAULT_ENGINE}, the default"
        got = (decision or {}).get("results", {}).get(engine)
        if got and "p50_us" in got:
            rows.append(_row(name, got["p50_us"], "<= 100 us", got["p50_us"] <= 100, "us",
                             f"bench/decision_latency.py, Decider.decide p50 of {got['n']:,} "
                             f"(mean {got['mean_us']} us, p99 {got['p99_us']} us), "
                             f"{decision.get('policy', '')}; {scope}"))
        else:
            why = got.get("error") if got else ("not run (--decision-n 0)" if decision is None
                                                else decision.get("error", "no result"))
            rows.append(_row(name, None, "<= 100 us", False, "us", f"not measured in this run: {why}; {scope}"))

    rows.append(_workers_row(r, failed, WORKERS, "iam-proxy-mix-nocache-1worker", "iam-proxy-mix-nocache"))

    for mode, target in PER_CORE_TARGETS:
        name = PER_CORE.format(mode=mode)
        got = r.get(target)
        by_process = (got or {}).get("cpu_s_per_1k_by_process") or []
        if got and by_process and by_process[-1] > 0:
            per_core = 1000 / by_process[-1]  # iam-proxy is the last process tree of these targets
            rows.append(_row(name, per_core, ">= 5,000", per_core >= 5000 and not got["errors"], "decisions/s/core",
                             f"{target}: {got['rps']:,.0f} req/s, iam-proxy's processes "
                             f"{by_process[-1]:.3f} CPU-s per 1,000 decisions (decision cache: the default)"
                             + _errors(got)))
        else:
            rows.append(_row(name, None, ">= 5,000", False, "decisions/s/core", _missing((target,), r, failed)))
    rows += _throughput_rows(r, failed, token_mix, REGO_CPP, "iam-proxy-embedded-mix-nocache", "iam-proxy-embedded-mix")
    rows.append(_workers_row(r, failed, WORKERS + REGO_CPP, "iam-proxy-embedded-mix-nocache-1worker",
                             "iam-proxy-embedded-mix-nocache"))
    return rows


def issue_targets_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Issue 20 targets (`targets.json`)", "", "| target | value | wanted | verdict | note |",
             "|---|---:|---|---|---|"]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:,.3g} {row['unit']}" if row["value"] < 100 \
            else f"{row['value']:,.0f} {row['unit']}"
        verdict = "met" if row["met"] else ("not measured" if row["value"] is None else "**not met**")
        lines.append(f"| {row['name']} | {value} | {row['target']} | {verdict} | {row['note']} |")
    return lines
