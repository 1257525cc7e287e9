"""The seed's claim, measured (issue 16): does a group-relative objective buy fairness at a small profit cost?

On the marketing example (examples/marketing_groups.toml), ``grpokit run`` is trained with profit
alone, with the group-relative components alone, and with mixtures: a grid of
``grpo.reward_weights`` over (profit, relative_to_cohort_median, cohort_percentile_rank), each
weight setting written ``P:R:Q`` (``peer_effect`` gets the profit weight; it is 0 without
spillover). Every setting runs with discovered cohorts (the example's ``[cohorts] method = "gmm"``)
and with the given region × channel cohorts (``cohorts.method = "column"``), for each seed s
(``grpo.seed = evaluation.seed = cohorts.seed = s``; the world, ``scenario.seed``, is fixed). The
individual-level baselines are the T- and X-learner ``grpokit run`` fits on its simulated A/B log.

Per policy, from the run's summary.json (true expected values on the evaluation population):

* profit per customer V; share of the oracle V / V*; share of the oracle's lift over no offer
  (V − V⁰) / (V* − V⁰);
* offer rate to sure things (the "already active shoppers");
* lowest cohort gain min_c (V_c − V⁰_c) over the run's own cohorts (discovered or given) and the
  spread max_c − min_c; with discovered cohorts also the lowest gain over the region × channel
  cohorts (one yardstick for both);
* untapped gain Σ_{s ∈ persuadable, new customer} share_s · (V_s − V⁰_s): value per customer added
  in the segments a campaign on active shoppers leaves untapped.

Table: mean ± standard deviation over seeds (markdown on stdout, ``--json``), frontier plot (profit
against lowest cohort gain, one point per weight setting, baselines marked: ``--plot`` SVG and
``--report`` HTML page)::

    .venv/bin/python benchmarks/group_frontier.py --seeds 0 1 2 --jobs 2 \\
        --json runs/bench/group_frontier.json --plot runs/bench/group_frontier.svg \\
        --report runs/bench/group_frontier/report.html

Runs are kept under ``--runs DIR`` (default runs/bench/group_frontier) and reused when their
summary.json exists, so an interrupted sweep resumes. To save time the runs skip the pilot and fit
only the T-/X-learner baselines (``evaluation.pilot = false``, ``evaluation.baselines``); neither
changes training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "marketing_groups.toml"
DEFAULT_WEIGHTS = ["1:0:0", "1:0.5:2", "1:0:5", "1:0:10", "1:0:20", "0:1:0", "0:0.5:2", "0:0:1"]
BASELINES = ("t_learner", "x_learner")
REFERENCES = ("oracle", "no_offer")
UNTAPPED = ("persuadable", "new_customer")
METRICS = {  # key -> (markdown column, kind)
    "value": ("profit / customer", "num"),
    "share_of_oracle": ("share of oracle", "pct"),
    "lift_share": ("share of oracle's lift over no offer", "pct"),
    "sure_rate": ("offer rate, sure things", "pct"),
    "lowest_gain": ("lowest cohort gain", "num"),
    "spread": ("cohort gain spread", "num"),
    "lowest_market_gain": ("lowest region×channel gain", "num"),
    "untapped_gain": ("untapped gain (persuadable + new)", "num"),
}


def parse_weights(text: str) -> tuple[float, float, float]:
    """``"P:R:Q"`` -> (profit, relative_to_cohort_median, cohort_percentile_rank) weights."""
    parts = text.split(":")
    try:
        w = tuple(float(x) for x in parts)
    except ValueError:
        w = ()
    if len(w) != 3 or any(not math.isfinite(x) or x < 0 for x in w) or not any(w):
        raise argparse.ArgumentTypeError(
            f"--weights {text!r}: give profit:relative_to_cohort_median:cohort_percentile_rank, three numbers >= 0, "
            "not all 0 (e.g. 1:0.5:2)")
    return w  # type: ignore[return-value]


def weight_label(w: tuple[float, float, float]) -> str:
    """A readable name of a weight setting: 'profit', 'rank 1 (group-relative only)', 'profit + rel 0.5 + rank 2'."""
    p, r, q = w
    terms = [f"{'' if p == 1 else f'{p:g}·'}profit" if p else "",
             f"rel {r:g}" if r else "", f"rank {q:g}" if q else ""]
    name = " + ".join(t for t in terms if t)
    return name + (" (group-relative only)" if not p else "")


def overrides(cohorts: str, seed: int, w: tuple[float, float, float], steps: int | None,
              baselines: bool = True) -> list[str]:
    """The ``--set`` overrides of one run (``baselines``: fit the T-/X-learner in this run)."""
    p, r, q = w
    sets = [f"grpo.seed={seed}", f"evaluation.seed={seed}", f"cohorts.seed={seed}",
            f"grpo.reward_weights.profit={p}", f"grpo.reward_weights.peer_effect={p}",
            f"grpo.reward_weights.relative_to_cohort_median={r}", f"grpo.reward_weights.cohort_percentile_rank={q}",
            "evaluation.pilot=false", "evaluation.baselines=" + json.dumps(list(BASELINES) if baselines else [])]
    if cohorts == "given":
        sets.append('cohorts.method="column"')
    if steps is not None:
        sets.append(f"grpo.steps={steps}")
    return sets


def run_dir(root: Path, cohorts: str, seed: int, w) -> Path:
    return root / cohorts / ("w" + "_".join(f"{x:g}" for x in w)) / f"s{seed}"


def run_one(config: Path, root: Path, cohorts: str, seed: int, w, baselines: bool, steps: int | None,
            threads: int | None) -> dict:
    """One ``grpokit run`` (reused when its summary.json exists); returns the summary."""
    out = run_dir(root, cohorts, seed, w)
    if (out / "summary.json").exists():
        return json.loads((out / "summary.json").read_text())
    if out.exists():  # an unfinished run: start it again
        import shutil

        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("grpokit")), "run", str(config), "--out", str(out),
           "--store", str(out.parent / f"s{seed}.duckdb"), "--no-progress"]
    for s in overrides(cohorts, seed, w, steps, baselines):
        cmd += ["--set", s]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0 or not (out / "summary.json").exists():
        raise RuntimeError(f"grpokit run failed ({cohorts}, seed {seed}, weights {w}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    print(f"  done {cohorts} seed {seed} {weight_label(w)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads((out / "summary.json").read_text())


def _gains(block: dict, ref: dict, key: str) -> list[float]:
    a, b = block.get(key) or {}, ref.get(key) or {}
    return [a[g] - b[g] for g in a if a.get(g) is not None and b.get(g) is not None]


def policy_metrics(summary: dict, name: str, cohort_key: str = "per_group") -> dict:
    """The frontier's figures of policy ``name`` in one run summary (see the module docstring).

    Gains are against the summary's ``no_offer`` policy, per cohort of ``cohort_key`` (``per_group``:
    the run's cohorts; ``per_market``: the region × channel cohorts of a discovered-cohorts run); the
    untapped gain uses ``summary["segments"]["shares"]`` (the segments' shares of the population)."""
    pol = summary["policies"]
    block, ref = pol[name], pol["no_offer"]
    gains = _gains(block, ref, cohort_key)
    market = _gains(block, ref, "per_market") or gains  # given cohorts: the run's cohorts are the markets
    shares = (summary.get("segments") or {}).get("shares") or {}
    ps, p0 = block.get("per_segment") or {}, ref.get("per_segment") or {}
    untapped = (sum(shares[s] * (ps[s] - p0[s]) for s in UNTAPPED)
                if all(s in shares and ps.get(s) is not None and p0.get(s) is not None for s in UNTAPPED) else None)
    top = pol.get("oracle", {}).get("value")
    lift = ((block["value"] - ref["value"]) / (top - ref["value"])) if top is not None and top - ref["value"] > 1e-12 else None
    return {"value": block["value"],
            "share_of_oracle": block["value"] / top if top else None,
            "lift_share": lift,
            "sure_rate": (block.get("offer_rate_by_segment") or {}).get("sure_thing", block.get("offer_rate_sure_things")),
            "lowest_gain": min(gains) if gains else None,
            "spread": (max(gains) - min(gains)) if gains else None,
            "lowest_market_gain": min(market) if market else None,
            "untapped_gain": untapped,
            "n_cohorts": len(block.get(cohort_key) or {})}


def _mean_sd(values: list) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    """Records ``{cohorts, policy, label, weights, seed, metrics}`` -> one row per (cohorts, policy,
    label) with ``mean.<k>``, ``sd.<k>`` (standard deviation over seeds) and ``seeds``; baselines
    and references are the same runs' baseline blocks, averaged over every run of the seed first."""
    by: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        by.setdefault((r["cohorts"], r["policy"], r["label"], tuple(r["weights"]) if r["weights"] else None), {}) \
          .setdefault(r["seed"], []).append(r["metrics"])
    rows = []
    for (cohorts, policy, label, weights), per_seed in by.items():
        seed_means = {s: {k: _mean_sd([m.get(k) for m in ms])[0] for k in (*METRICS, "n_cohorts")}
                      for s, ms in sorted(per_seed.items())}
        row = {"cohorts": cohorts, "policy": policy, "label": label, "weights": list(weights) if weights else None,
               "seeds": sorted(per_seed), "mean": {}, "sd": {}, "per_seed": seed_means}
        for k in (*METRICS, "n_cohorts"):
            row["mean"][k], row["sd"][k] = _mean_sd([m[k] for m in seed_means.values()])
        rows.append(row)
    cohorts_order = list(dict.fromkeys(r["cohorts"] for r in rows))
    kind = {"grpo": 0, **{b: 1 for b in BASELINES}, **{n: 2 for n in REFERENCES}}
    first = {id(r): i for i, r in enumerate(rows)}
    return sorted(rows, key=lambda r: (cohorts_order.index(r["cohorts"]), kind.get(r["policy"], 1), first[id(r)]))


def collect(summaries: list[tuple]) -> list[dict]:
    """(cohorts, seed, weights, summary) per run -> records of the trained policy, of the references
    (oracle, no offer: in every run) and of the baselines. The T-/X-learner depend on the seed only (its
    A/B log and population), so they are fitted in one run per seed: a discovered-cohorts run also
    gives their gains over the given cohorts (``per_market``)."""
    records = []
    fitted: dict[int, tuple[str, dict]] = {}
    for cohorts, seed, w, summary, *_ in summaries:
        records.append({"cohorts": cohorts, "policy": "grpo", "label": weight_label(w), "weights": list(w), "seed": seed,
                        "metrics": policy_metrics(summary, "grpo")})
        for name in REFERENCES:
            if name in summary["policies"]:
                records.append({"cohorts": cohorts, "policy": name, "label": name, "weights": None, "seed": seed,
                                "metrics": policy_metrics(summary, name)})
        if all(b in summary["policies"] for b in BASELINES) and (seed not in fitted or cohorts == "discovered"):
            fitted[seed] = (cohorts, summary)
    for cohorts in dict.fromkeys(c for c, *_ in summaries):
        for seed in sorted({s for c, s, *_ in summaries if c == cohorts}):
            if seed not in fitted:
                continue
            source, summary = fitted[seed]
            key = "per_group" if source == cohorts else "per_market" if source == "discovered" else None
            if key is None:
                continue
            for name in BASELINES:
                records.append({"cohorts": cohorts, "policy": name, "label": name, "weights": None, "seed": seed,
                                "metrics": policy_metrics(summary, name, key)})
    return records


def _fmt(kind: str, mean, sd) -> str:
    if mean is None:
        return "–"
    if kind == "pct":
        return f"{100 * mean:.1f} ± {100 * sd:.1f} %"
    return f"{mean:.2f} ± {sd:.2f}"


def markdown_table(rows: list[dict]) -> str:
    """One markdown row per (cohorts, objective or baseline): mean ± sd over seeds of every figure."""
    head = ["cohorts", "objective", *[METRICS[k][0] for k in METRICS]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        n = r["mean"].get("n_cohorts")
        coh = f"{r['cohorts']} ({n:.0f})" if n is not None and r["policy"] == "grpo" else r["cohorts"]
        lines.append("| " + " | ".join([coh, r["label"], *[_fmt(METRICS[k][1], r["mean"][k], r["sd"][k]) for k in METRICS]]) + " |")
    return "\n".join(lines)


def frontier(rows: list[dict], title: str = "") -> dict:
    """The report's frontier block: one point per (cohorts, weight setting) and per baseline, with
    ± sd whiskers, and the table (:func:`grpokit.evaluation.report.frontier_html`)."""
    points = []
    seen = set()
    for r in rows:
        m, s = r["mean"], r["sd"]
        if m["value"] is None or m["lowest_gain"] is None:
            continue
        if r["policy"] == "grpo":
            short = ":".join(f"{x:g}" for x in r["weights"]) if r["weights"] else r["label"]  # P:R:Q keeps labels apart
            points.append({"label": short, "series": f"{r['cohorts']} cohorts", "kind": "objective",
                           "x": m["lowest_gain"], "y": m["value"], "x_err": s["lowest_gain"], "y_err": s["value"]})
        elif (r["policy"], r["cohorts"]) not in seen:
            seen.add((r["policy"], r["cohorts"]))
            points.append({"label": f"{r['policy']} ({r['cohorts']})", "kind": "reference" if r["policy"] in REFERENCES else "baseline",
                           "x": m["lowest_gain"], "y": m["value"], "x_err": s["lowest_gain"], "y_err": s["value"]})
    header = ["cohorts", "objective", *[METRICS[k][0] for k in METRICS]]
    table_rows = [[r["cohorts"], r["label"], *[(_fmt(METRICS[k][1], r["mean"][k], r["sd"][k])) for k in METRICS]] for r in rows]
    return {"title": title or "profit per customer against the lowest cohort gain over no offer (mean ± sd over seeds)",
            "note": "points are labelled with their weights profit:relative_to_cohort_median:cohort_percentile_rank; "
                    "whiskers: ± sd over seeds",
            "points": points, "table": {"header": header, "rows": table_rows, "kinds": ["raw"] * len(header)}}


def write_outputs(rows: list[dict], *, json_out: str | None, plot_out: str | None, report_out: str | None,
                  command: str, meta: dict) -> None:
    from grpokit.atomic import atomic_write_text
    from grpokit.evaluation.report import frontier_svg, write_report

    block = frontier(rows)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_out, json.dumps({"command": command, **meta, "rows": rows, "frontier": block}, indent=1))
    if plot_out:
        Path(plot_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plot_out, frontier_svg(block["points"], title=block["title"]))
    if report_out:
        Path(report_out).parent.mkdir(parents=True, exist_ok=True)
        notes = [f"command: {command}",
                 "lowest cohort gain = min over the run's cohorts of (V_c − V_c(no offer)); discovered cohorts: the "
                 "example's GMM on RFM + tenure, given: region × channel; whiskers and ± are the standard deviation "
                 "over seeds; untapped gain = Σ over persuadables and new customers of share × (V_s − V_s(no offer))",
                 f"seeds {meta.get('seeds')}, steps {meta.get('steps') or 'as in the example'}"]
        write_report(report_out, title="grpokit: group-relative objectives, the profit-fairness frontier",
                     summary={"policies": {}, "frontier": block}, notes=notes)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--weights", type=parse_weights, nargs="+", default=[parse_weights(w) for w in DEFAULT_WEIGHTS],
                    help="profit:relative_to_cohort_median:cohort_percentile_rank weights, e.g. 1:0:0 1:0.5:2 0:0:1")
    ap.add_argument("--cohorts", nargs="+", choices=["discovered", "given"], default=["discovered", "given"])
    ap.add_argument("--steps", type=int, default=None, help="grpo.steps (default: the example's)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores / jobs threads)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench" / "group_frontier")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--plot", dest="plot_out", help="the frontier as an SVG file")
    ap.add_argument("--report", dest="report_out", help="an HTML page with the frontier plot and the table")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    if not args.config.is_file():
        ap.error(f"--config {args.config} does not exist")
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    cohorts = sorted(set(args.cohorts), key=["discovered", "given"].index)  # baselines are fitted in a discovered run
    jobs = [(c, s, w, c == cohorts[0] and w == args.weights[0]) for c in cohorts for s in args.seeds for w in args.weights]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = [(c, s, w, summ) for (c, s, w, _), summ in
                     zip(jobs, pool.map(lambda j: run_one(args.config, args.runs, *j, args.steps, threads), jobs))]
    rows = aggregate(collect(summaries))
    command = "python benchmarks/group_frontier.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"seeds": args.seeds, "steps": args.steps, "cohorts": cohorts, "weights": [list(w) for w in args.weights],
            "wall_seconds": time.perf_counter() - t0, "train_seconds": {f"{c}/s{s}/{weight_label(w)}": summ["train_seconds"]
                                                                        for c, s, w, summ in summaries}}
    write_outputs(rows, json_out=args.json_out, plot_out=args.plot_out, report_out=args.report_out, command=command, meta=meta)
    print(markdown_table(rows))
    print(f"\n{len(jobs)} runs, {meta['wall_seconds']:.0f} s wall", file=sys.stderr)
    return {"rows": rows, **meta}


if __name__ == "__main__":
    main()
