"""Rerun BENCHMARKS.md's checked tables from their commands and compare them with the file.

    python benchmarks/check_benchmarks.py                      # every check, fresh runs in a temporary folder
    python benchmarks/check_benchmarks.py --only marketing     # one check
    python benchmarks/check_benchmarks.py --runs runs/bench    # keep (and reuse) the run directories there
    python benchmarks/check_benchmarks.py --write              # put the regenerated tables into BENCHMARKS.md
    make bench-check                                           # the first line

A checked table sits in BENCHMARKS.md between ``<!-- bench-check NAME -->`` and
``<!-- /bench-check -->``; :data:`CHECKS` holds each one's commands (the ones printed above the
table) and the script that turns the runs into the table. The check passes when every number of
the regenerated table equals the file's to its last printed digit (one unit of slack for float
noise across machines) and all the text matches. ``--write`` is the only way figures get into
those blocks: from the commands, never by hand. Exit status 1 on any mismatch.

A check's command is either a `grpokit run`-like command (the script adds ``--out DIR``; the run is
finished when DIR/summary.json exists) or a command writing one file, whose path stands where
:data:`OUT` is in its args (a ``benchmarks/*.py`` script runs on this interpreter); such a command's
own run folders, where it keeps them, go where :data:`OUT_RUNS` stands (that path + ``.runs``,
removed before a fresh run, kept and reused with ``--runs``). Checks listed
in :data:`NEEDS` read data outside the repository (the Open Bandit Dataset sample in
``../shared/data/obd``) and are skipped, with a line saying so, where it is absent.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import business_table  # noqa: E402
import fusion_table  # noqa: E402
import group_frontier  # noqa: E402
import learn_defaults  # noqa: E402
import obd_table  # noqa: E402
import preferences_table  # noqa: E402

SEEDS = (0, 1, 2)
_PREF = ["bench", "preferences", "--json"]
_OBD = "../shared/data/obd"  # relative to the repository root (the commands run there)
_OBD_LEARN = {"gbm": [], "linear": ["--outcome-model", "linear"], "gbm_beta0.05": ["--set", "grpo.beta=0.05"],
              "gbm_drgrpo_lr0.01": ["--set", "grpo.advantage.name=dr_grpo", "--set", "grpo.lr=0.01"]}
_DENSE = ["--set", 'scenario.reward="gaussian"', "--set", "scenario.scales=[1.0,0.1,0.02]", "--set", "scenario.noise=[1.0,0.1,0.02]"]
_GMV3 = ["--set", "scenario.posterior_order=0.0", "--set", "grpo.lr=0.003"]  # GRADE's GMV-only runs (k5, kh5, gh5fixed)
_LOGS = ["--set", "evaluation.train_on=logs", "--set", "evaluation.pilot=false", "--set", "evaluation.compare_ignore_spillover=false"]

#: stands, in a check's grpokit args, for the path of the one file the command writes
OUT = "{out}"
#: stands for that path + ".runs": the folder of the command's own runs (benchmarks/group_frontier.py --runs)
OUT_RUNS = "{out}.runs"

#: name -> (runs: [(run dir or file name, grpokit args)], table(run paths) -> markdown); args without
#: OUT get ``--out DIR --no-progress --store ...`` appended (a `grpokit run`)
CHECKS = {
    "marketing": (
        [(f"mk_s{s}", ["run", "examples/marketing.toml", "--set", f"grpo.seed={s}", "--set", f"evaluation.seed={s}"])
         for s in SEEDS],
        lambda dirs: business_table.table("marketing", dirs),
    ),
    "marketing-logs": (
        [(f"mk_logs_s{s}", ["run", "examples/marketing.toml", *_LOGS, "--set", f"grpo.seed={s}", "--set", f"evaluation.seed={s}"])
         for s in SEEDS],
        lambda dirs: business_table.table("logs", dirs),
    ),
    "marketing-spillover": (
        [(f"mk_spill_s{s}", ["run", "examples/marketing.toml", "--set", "scenario.spillover=0.3", "--set", f"grpo.seed={s}",
                             "--set", f"evaluation.seed={s}"]) for s in SEEDS],
        lambda dirs: business_table.table("spillover", dirs),
    ),
    "pricing": ([("pricing", ["run", "examples/pricing.toml"])], lambda dirs: business_table.table("marketing", dirs)),
    "allocation": ([("allocation", ["run", "examples/allocation.toml"])], lambda dirs: business_table.table("marketing", dirs)),
    "pref-sparse": ([("pref_sparse.json", [*_PREF, OUT, "--seeds", "5"])],
                    lambda paths: preferences_table.table(paths[0])),
    "pref-dense": ([("pref_dense.json", [*_PREF, OUT, "--seeds", "5", *_DENSE])],
                   lambda paths: preferences_table.table(paths[0])),
    "pref-batch": ([("pref_batch.json", [*_PREF, OUT, "--seeds", "5", *_DENSE, "--set", 'grpo.advantage.scale="batch"'])],
                   lambda paths: preferences_table.table(paths[0], {"grpo": "grpo (batch std)"})),
    "pref-drift": (
        [("pref_drift.json", [*_PREF, OUT, "--seeds", "5", "--set", "scenario.drift=[0.0,0.5,0.2]", "--set", "grpo.advantage.decay=0.9"]),
         ("pref_drift_big_nodecay.json", [*_PREF, OUT, "--seeds", "5", "--methods", "pgrpo",
                                          "--set", "scenario.drift=[0.0,3.0,1.0]", "--set", "grpo.advantage.decay=1.0"])],
        lambda paths: preferences_table.table(paths[0], {"pgrpo": "pgrpo (decay 0.9)"}) + "\n"
        + "\n".join(preferences_table.table(paths[1], {"pgrpo": "pgrpo (drift [0, 3, 1], decay 1.0)"}).splitlines()[2:]),
    ),
    "obd-validate": ([("obd_validate.json", ["obd", "validate", "--root", _OBD, "--campaign", "all", "--json", OUT])],
                     lambda paths: obd_table.validate(paths[0])),
    "ope-coverage": ([("ope_coverage.json", ["benchmarks/ope_coverage.py", "--json", OUT])],
                     lambda paths: obd_table.coverage(paths[0], {"dr-gain": "dr improvement (paired, π − π₀)"})),
    "grade": (
        [(f"p5_s{s}", ["fusion", "run", "examples/fusion.toml", "--set", f"fusion.seed={s}", "--set", f"grpo.seed={s}"])
         for s in range(5)],
        lambda dirs: fusion_table.table(dirs),
    ),
    "grade-gmv": (
        [(f"k5_s{s}", ["fusion", "run", "examples/fusion.toml", "--set", "scenario.posterior_order=0.0", "--set", "grpo.lr=0.003",
                       "--set", f"fusion.seed={s}", "--set", f"grpo.seed={s}"])
         for s in range(5)],
        lambda dirs: fusion_table.table(dirs),
    ),
    # miscalibration 4 (the model's p_order 4x too high on expensive items), GMV objective: kh5 with the held-out
    # prior-weight choice, gh5fixed with the prior weight fixed at 1 (its row against kh5's static_tuned)
    "grade-hacking": (
        [(f"kh5_s{s}", ["fusion", "run", "examples/fusion.toml", *_GMV3, "--set", "scenario.miscalibration=4.0",
                        "--set", f"fusion.seed={s}", "--set", f"grpo.seed={s}",
                        "--set", 'fusion.ablations=["prior_only", "posterior_only"]', "--set", "fusion.oracle=false"])
         for s in range(5)]
        + [(f"gh5fixed_s{s}", ["fusion", "run", "examples/fusion.toml", *_GMV3, "--set", "scenario.miscalibration=4.0",
                               "--set", f"fusion.seed={s}", "--set", f"grpo.seed={s}", "--set", "fusion.ablations=[]",
                               "--set", "fusion.prior_weight_grid=[]", "--set", "fusion.oracle=false"])
           for s in range(5)],
        lambda dirs: fusion_table.table(dirs[:5], [("grade, prior weight fixed at 1 (gh5fixed)", dirs[5:], "grade")]),
    ),
    # every candidate GRADE (one per prior weight) on the truth: of the grade-gmv (k5) runs, and of the grade-hacking (kh5)
    # runs (two blocks, so that each can be rerun alone: the five k5 runs take the longer)
    "grade-choice": (
        [(f"k5_s{s}", ["fusion", "run", "examples/fusion.toml", *_GMV3, "--set", f"fusion.seed={s}", "--set", f"grpo.seed={s}"])
         for s in range(5)],
        lambda dirs: fusion_table.choice_table([("GMV, miscalibration 2", dirs)]),
    ),
    "grade-choice-hacking": (
        [(f"kh5_s{s}", ["fusion", "run", "examples/fusion.toml", *_GMV3, "--set", "scenario.miscalibration=4.0",
                        "--set", f"fusion.seed={s}", "--set", f"grpo.seed={s}",
                        "--set", 'fusion.ablations=["prior_only", "posterior_only"]', "--set", "fusion.oracle=false"])
         for s in range(5)],
        lambda dirs: fusion_table.choice_table([("GMV, miscalibration 4", dirs)]),
    ),
    # the group-relative frontier (issue 16): 8 weight settings x discovered / given cohorts x 3 seeds, 48 runs
    "group-frontier": (
        [("group_frontier.json", ["benchmarks/group_frontier.py", "--seeds", "0", "1", "2", "--jobs", "2",
                                  "--runs", OUT_RUNS, "--json", OUT])],
        lambda paths: group_frontier.markdown_table(json.loads(Path(paths[0]).read_text())["rows"]),
    ),
    # learning from a log, the default advantage (own-data log, 5 seeds) and the marketing arms (spillover 0 and 0.3)
    "learn-defaults-own": (
        [("learn_defaults.json", ["benchmarks/learn_defaults.py", "--seeds", "0", "1", "2", "3", "4", "--out", OUT])],
        lambda paths: learn_defaults.own_data_table(json.loads(Path(paths[0]).read_text()), {"grpo": "**grpo**"}),
    ),
    "learn-defaults-marketing": (
        [("ld_mk.json", ["benchmarks/learn_defaults.py", "--setting", "marketing", "--seeds", "0", "1", "2", "3", "4",
                         "--out", OUT]),
         ("ld_mk_spill.json", ["benchmarks/learn_defaults.py", "--setting", "marketing", "--spillover", "0.3",
                               "--seeds", "0", "1", "2", "--out", OUT])],
        lambda paths: learn_defaults.marketing_table([
            (json.loads(Path(paths[0]).read_text()),
             {"grpo": "**grpo**", "pgrpo (cohort groups)": "pgrpo (cohort groups; the example's setting, so `run --set "
                                                           "evaluation.train_on=logs`)"}),
            (json.loads(Path(paths[1]).read_text()),
             {"pgrpo + interference": "pgrpo + interference (cohort treated share + peer credit)"})]),
    ),
    "obd-learn": (
        [(f"obd_learn_gbm_s{s}.json", ["obd", "learn", "--root", _OBD, "--campaign", "all", "--json", OUT, "--seed", str(s)])
         for s in SEEDS],
        lambda paths: obd_table.learn(paths, {"gbm": "gbm (default)"}),
    ),
    # the other configurations of that section (linear outcome model, KL to the initial policy, Dr. GRPO at lr 0.01)
    "obd-learn-other": (
        [(f"obd_learn_{label}_s{s}.json", ["obd", "learn", "--root", _OBD, "--campaign", "all", "--json", OUT, "--seed", str(s),
                                            *extra])
         for label, extra in _OBD_LEARN.items() if label != "gbm" for s in SEEDS],
        lambda paths: obd_table.learn(paths, {"gbm_beta0.05": "gbm, beta 0.05", "gbm_drgrpo_lr0.01": "gbm, dr_grpo, lr 0.01"}),
    ),
}
#: checks that need data outside the repository: skipped (and said so) where it is absent
NEEDS = {"obd-validate": _OBD, "obd-learn": _OBD, "obd-learn-other": _OBD}
_DONE: set[Path] = set()  # run directories finished in this invocation

#: a block's body never runs into another block's tags (an empty block matches too)
_BLOCK = re.compile(r"(<!-- bench-check (?P<name>[\w-]+) -->\n)(?P<body>(?:(?!<!-- /?bench-check)[\s\S])*?)(\n?<!-- /bench-check -->)")
_END = "\n<!-- /bench-check -->"
_NUM = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def blocks(text: str) -> dict[str, str]:
    """NAME -> the table text of each checked block."""
    return {m["name"]: m["body"].strip() for m in _BLOCK.finditer(text)}


def same(expected: str, got: str) -> list[str]:
    """Lines that differ: text must match exactly, numbers to their last printed digit (± one unit)."""
    bad = []
    e_lines, g_lines = expected.strip().splitlines(), got.strip().splitlines()
    if len(e_lines) != len(g_lines):
        return [f"{len(e_lines)} lines in BENCHMARKS.md, {len(g_lines)} regenerated"]
    for e, g in zip(e_lines, g_lines):
        en, gn = _NUM.findall(e), _NUM.findall(g)
        if _NUM.sub("#", e) != _NUM.sub("#", g) or len(en) != len(gn):
            bad.append(f"- {e}\n+ {g}")
            continue
        for a, b in zip(en, gn):
            decimals = len(a.split(".")[1]) if "." in a else 0
            if abs(float(a.replace(",", "")) - float(b.replace(",", ""))) > 1.01 * 10.0**-decimals:
                bad.append(f"- {e}\n+ {g}")
                break
    return bad


def write_blocks(path: Path, tables: dict[str, str]) -> None:
    """Put ``tables`` (NAME -> table) into their blocks of ``path``, re-read just before writing, so that
    edits made to the rest of the file while the runs went on are kept."""
    text = path.read_text()
    new = _BLOCK.sub(lambda m: m.group(1) + tables[m["name"]] + _END if m["name"] in tables else m.group(0), text)
    if _BLOCK.sub("", new) != _BLOCK.sub("", text):  # a guard: nothing outside the blocks may change
        raise RuntimeError(f"writing the blocks would change {path.name} outside them; not written")
    path.write_text(new)


def _grpokit() -> list[str]:
    exe = Path(sys.executable).parent / "grpokit"
    return [str(exe)] if exe.exists() else [shutil.which("grpokit") or "grpokit"]


def run_check(name: str, runs_dir: Path, reuse: bool) -> str:
    """Run the check's commands (reusing finished run directories when ``reuse``) and return its table."""
    runs, make_table = CHECKS[name]
    dirs = []
    for run_name, args in runs:
        out = runs_dir / run_name
        dirs.append(out)
        to_file = OUT in args  # a command writing one file (its path where OUT stands), else a `grpokit run` directory
        finished = out if to_file else out / "summary.json"
        if (reuse or out in _DONE) and finished.exists():
            print(f"  reusing {out}", flush=True)
            continue
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        side = Path(f"{out}.runs")
        if OUT_RUNS in args and not reuse and side.exists():  # a fresh check reruns the command's own runs too
            shutil.rmtree(side)
        if to_file:  # a benchmarks/*.py script runs on this interpreter, anything else is a grpokit command
            cmd = [*([sys.executable] if args[0].endswith(".py") else _grpokit()),
                   *(str(out) if a == OUT else str(side) if a == OUT_RUNS else a for a in args)]
        else:
            store = ["--store", str(runs_dir / "check.duckdb")] if args[0] == "run" else []  # `fusion run` has no store
            cmd = [*_grpokit(), *args, "--out", str(out), "--no-progress", *store]
        print("  $ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        _DONE.add(out)
    return make_table(dirs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="checks to run (default: all)")
    ap.add_argument("--runs", type=Path, help="where the runs go and are reused from (default: a fresh temporary folder)")
    ap.add_argument("--write", action="store_true", help="write the regenerated tables into BENCHMARKS.md")
    ap.add_argument("--file", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    text = args.file.read_text()
    found = blocks(text)
    names = args.only or sorted(CHECKS)
    missing = [n for n in names if n not in found and not args.write]
    if missing:
        print(f"{args.file.name} has no block <!-- bench-check NAME --> for {missing}")
        return 1
    tmp = None
    if args.runs is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-check-")
        runs_dir = Path(tmp.name)
    else:
        runs_dir = args.runs
        runs_dir.mkdir(parents=True, exist_ok=True)
    failed = skipped = 0
    written: dict[str, str] = {}
    try:
        for name in names:
            print(f"[{name}]", flush=True)
            if name in NEEDS and not (ROOT / NEEDS[name]).exists():
                print(f"  skipped: it needs {NEEDS[name]} (not found from {ROOT})")
                skipped += 1
                continue
            table = run_check(name, runs_dir, reuse=args.runs is not None)
            if args.write:
                if name not in found:
                    print(f"  no block for {name} in {args.file.name}: add '<!-- bench-check {name} -->' and "
                          "'<!-- /bench-check -->' lines where the table goes")
                    failed += 1
                    continue
                written[name] = table
                print("  regenerated")
                continue
            diff = same(found[name], table)
            if diff:
                failed += 1
                print(f"  MISMATCH ({len(diff)} lines):\n" + "\n".join(diff))
            else:
                print("  reproduces")
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.write and written:
        write_blocks(args.file, written)
    print(f"{len(names) - failed - skipped}/{len(names)} checks {'written' if args.write else 'reproduce'}"
          + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
