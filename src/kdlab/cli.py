"""``kdlab <command>``: one subcommand per pipeline stage, plus models / profile / data / check.

A stage command calls the function its stage module runs under DVC
(``python -m kdlab.stages.<module>``), after validating the whole params.yaml, names included
(:mod:`kdlab.checks`), so a bad value fails before any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from kdlab.checks import load_checked
from kdlab.stages.common import die_with_parent, report_errors


def _cfg(args):
    return load_checked(args.params)


def cmd_check(args) -> None:
    from kdlab.stages.check import check

    check(_cfg(args), args.params, args.write)


def cmd_download(args) -> None:
    from kdlab.stages.data import download

    download(_cfg(args))


def cmd_split(args) -> None:
    from kdlab.stages.data import split

    split(_cfg(args))


def cmd_train(args) -> None:
    from kdlab.stages.train import train_role

    train_role(_cfg(args), args.role)


def cmd_soft_labels(args) -> None:
    from kdlab.stages.softlabels import build_soft_labels

    build_soft_labels(_cfg(args))


def cmd_teacher_logits(args) -> None:
    from kdlab.stages.teacher_logits import teacher_logits

    teacher_logits(_cfg(args))


def cmd_distill(args) -> None:
    from kdlab.stages.distill import distill

    distill(_cfg(args), args.method)


def cmd_grid(args) -> None:
    from kdlab.stages.grid import distill_grid

    distill_grid(_cfg(args))


def cmd_probe(args) -> None:
    from kdlab.stages.probe import probe

    probe(_cfg(args))


def cmd_analyse(args) -> None:
    from kdlab.stages.analyse import analyse

    analyse(_cfg(args))


def cmd_profile(args) -> None:
    if args.model is None:
        from kdlab.stages.profile import profile

        profile(_cfg(args))
        return
    from kdlab.models import build_model, get_spec
    from kdlab.profiling import parse_shape, profile_model

    shape = parse_shape(args.input)
    get_spec(args.model)
    model = build_model(args.model, args.num_classes, shape[0], input_size=shape[1])
    p = profile_model(model, args.model, shape, count_mode=args.count_mode)
    if args.json:
        print(json.dumps(p.as_dict(), indent=2))
    else:
        fvcore = p.count_mode == "fvcore"
        mode = "eval mode, fvcore" if fvcore else "train mode, torchscan convention (ReffAKD)"
        print(f"model        {p.model} @ 1x{p.input} (batch 1, {mode})")
        print(f"params       {p.params:,}")
        print(f"MACs         {p.macs:,}")
        note = "(= 2 x MACs)" if fvcore else "(every operation counted on its own)"
        print(f"FLOPs        {p.flops:,}  {note}")
        print(f"memory       {p.param_mib:.3f} MiB (parameters + buffers)")
        print(f"activations  {p.activation_mib:.3f} MiB (all leaf-module outputs)")


def cmd_tables(args) -> None:
    from kdlab.stages.tables import tables

    tables(_cfg(args))


def cmd_models(args) -> None:
    import torch

    from kdlab.models import build_model, count_params, get_spec, model_names

    rows = []
    for name in model_names():
        spec = get_spec(name)
        channels = spec.default_in_channels
        with torch.device("meta"):
            model = build_model(name, args.num_classes, channels)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "params": count_params(model),
                "description": spec.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:18s} {r['family']:12s} {r['params']:>12,}  {r['description']}")


def cmd_data(args) -> None:
    from kdlab.data import dataset_names, get_dataset

    rows = []
    for name in dataset_names():
        s = get_dataset(name)
        rows.append(
            {
                "name": name,
                "classes": s.num_classes,
                "shape": list(s.shape),
                "splits": s.splits,
                "files": [f.name for f in s.files],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        splits = ", ".join(f"{k} {v:,}" for k, v in r["splits"].items())
        print(f"{r['name']:14s} {r['classes']:>4} classes  {shape:8s}  {splits}")


def cmd_preset(args) -> None:
    from kdlab import presets
    from kdlab.checks import parse_checked
    from kdlab.io import write_text

    text = presets.resolve(args.name)
    parse_checked(yaml.safe_load(text))  # a preset that does not validate never lands
    target = Path(args.params)
    write_text(target, text)
    print(f"{target} now holds preset {args.name!r}; run `dvc repro` (or `dvc exp run`)")


def cmd_seeds(args) -> None:
    from kdlab.reports import summary
    from kdlab.reports.runs import exp_show, runs_from_exp_show

    runs = runs_from_exp_show(exp_show(Path(args.repo), args.all_commits))
    df = summary.summarize(runs, args.metric)
    if args.out:
        summary.write_summary(df, args.metric, Path(args.out))
    print(summary.to_markdown(df, args.metric), end="")


def cmd_papers(args) -> None:
    from kdlab.reports import catalogue

    entries = catalogue.catalogue()
    if args.json:
        print(json.dumps(catalogue.as_json(entries), indent=2))
    elif args.readme:
        changed = catalogue.update_readme(Path(args.readme), entries)
        print(f"{args.readme}: papers section {'updated' if changed else 'up to date'}")
    else:
        print(catalogue.to_text(entries), end="")


def cmd_results(args) -> None:
    from kdlab.reports import results_page

    page = Path(args.page)
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / page.name
            copy.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
            stale = results_page.update(copy, Path.cwd(), page)
        if stale:
            raise RuntimeError(f"{page}: generated blocks are stale; run `kdlab results {page}`")
        print(f"{page}: generated blocks up to date")
        return
    changed = results_page.update(page)
    print(f"{page}: generated blocks {'updated' if changed else 'up to date'}")


def cmd_reproduce(args) -> None:
    from kdlab import reproduce, reproduce_pairs
    from kdlab.reports import experiments

    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs} is not allowed; allowed: an integer >= 1")
    if args.name in experiments.PAIRS:  # pairs x methods: baselines + the DVC queue
        if args.rerun:
            raise ValueError(f"--rerun is for the grids ({', '.join(experiments.GRIDS)})")
        repo = Path(args.repo)
        plan = reproduce_pairs.make_pair_plan(args.name, repo, args.scale, args.seeds, args.jobs)
        print(reproduce_pairs.plan_text(plan), end="", flush=True)
        if not args.dry_run:
            reproduce_pairs.execute(plan, repo)
        return
    if args.name not in experiments.GRIDS:
        known = [*experiments.GRIDS, *experiments.PAIRS]
        raise ValueError(f"unknown table {args.name!r}; allowed: {', '.join(known)}")
    plan = reproduce.make_plan(args.name, Path(args.repo), args.scale, args.seeds, rerun=args.rerun)
    print(reproduce.plan_text(plan), end="", flush=True)
    if not args.dry_run:
        reproduce.execute(plan, Path(args.repo))


def cmd_report(args) -> None:
    from kdlab.reports import writer

    out, sources = writer.report(
        args.name,
        Path(args.repo),
        all_commits=args.all_commits,
        replace=args.replace,
        scale=args.scale,
    )
    print(out.read_text(), end="")
    print(f"\nCell sources ({len(sources)}):")
    for line in sources:
        print(f"  {line}")


def cmd_queue(args) -> None:
    import shlex
    import subprocess

    import yaml

    from kdlab.methods import method_names
    from kdlab.reports import experiments

    if args.name not in experiments.PAIRS:
        raise ValueError(
            f"unknown table {args.name!r} for `kdlab queue`; known: {', '.join(experiments.PAIRS)}"
        )
    with open(args.params, encoding="utf-8") as fh:
        preset = yaml.safe_load(fh)
    runs = experiments.queue_overrides(args.name, preset, set(method_names()))
    for over in runs:
        cmd = ["dvc", "exp", "run", "--queue", *(x for o in over for x in ("-S", o))]
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
    print(f"[queue] {len(runs)} experiments for {args.name}" + (" (dry run)" * args.dry_run))


def cmd_deps(args) -> None:
    from kdlab import depgraph

    raise SystemExit(depgraph.main(["--check" if args.check else "--write"]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("check", cmd_check, "validate params.yaml")
    sp.add_argument("--write", metavar="FILE", help="on success write FILE (the check stage)")
    add("download", cmd_download, "stage: fetch and verify the data set")
    add("split", cmd_split, "stage: subset / validation split / label noise manifest")
    sp = add("train", cmd_train, "stage: train the teacher, the CE student or the CAE")
    sp.add_argument("role", choices=["teacher", "student", "cae"])
    add("soft-labels", cmd_soft_labels, "stage: CAE embeddings -> soft-label matrix")
    add("teacher-logits", cmd_teacher_logits, "stage: cache teacher logits (as is and flipped)")
    add("analyse", cmd_analyse, "stage: KL/CE/feature distance/NMI of every student to the teacher")
    add("probe", cmd_probe, "stage: linear probe of every student's frozen features")
    sp = add("distill", cmd_distill, "stage: distil the student with METHOD")
    sp.add_argument("method")
    add("grid", cmd_grid, "stage: train the students of grid.cells together (distill_grid)")
    sp = add("profile", cmd_profile, "stage (no MODEL) or one model's params/MACs/FLOPs/memory")
    sp.add_argument("model", nargs="?")
    sp.add_argument("--input", default="3x32x32", help="CxHxW (default 3x32x32)")
    sp.add_argument("--num-classes", type=int, default=100)
    sp.add_argument(
        "--count-mode",
        choices=["fvcore", "torchscan"],
        default="fvcore",
        help="fvcore (default; FLOPs = 2 x MACs) or torchscan (ReffAKD Table 6 convention)",
    )
    sp.add_argument("--json", action="store_true")
    add("tables", cmd_tables, "stage: paper-vs-ours tables")
    sp = add("models", cmd_models, "list registered models with parameter counts")
    sp.add_argument("--num-classes", type=int, default=100)
    sp.add_argument("--json", action="store_true")
    sp = add("data", cmd_data, "list data sets")
    sp.add_argument("action", choices=["list"])
    sp.add_argument("--json", action="store_true")
    sp = add("seeds", cmd_seeds, "mean +- std over seeds of the finished DVC experiments")
    sp.add_argument("--metric", default="test_acc", help="metric key (default test_acc)")
    sp.add_argument("--repo", default=".", help="DVC repository (default .)")
    sp.add_argument("--all-commits", action="store_true", help="every commit, not only HEAD")
    sp.add_argument("--out", help="also write this Markdown file and a CSV beside it")
    sp = add("papers", cmd_papers, "catalogue of every paper table: cells, status, command")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--readme", metavar="README", help="rewrite its papers section (markers)")
    sp = add("results", cmd_results, "rewrite the generated blocks (every number) of a page")
    sp.add_argument("page", nargs="?", default="docs/results.md", help="default docs/results.md")
    sp.add_argument("--check", action="store_true", help="exit 2 when the page is stale")
    sp = add("reproduce", cmd_reproduce, "plan, run and resume a paper table, then report it")
    sp.add_argument(
        "name", help="a grid (reffakd_table10) or a pairs x methods table (srrl_table6)"
    )
    sp.add_argument("--scale", default="paper", help="paper (default), cpu, current or a preset")
    sp.add_argument(
        "--seeds", type=int, nargs="+", help="default: the table's seeds, else the preset's"
    )
    sp.add_argument(
        "--jobs", type=int, default=1, help="queue workers of a pairs table (default 1)"
    )
    sp.add_argument("--repo", default=".", help="DVC repository (default .)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan only")
    sp.add_argument(
        "--rerun",
        action="store_true",
        help="train the committed cells again and print each beside the record it replaces",
    )
    sp = add("report", cmd_report, "a paper table from the finished DVC experiments (grids)")
    sp.add_argument("name", help="e.g. reffakd_table10 (kdlab papers lists the commands)")
    sp.add_argument("--repo", default=".", help="DVC repository (default .)")
    sp.add_argument("--all-commits", action="store_true", help="every commit, not only HEAD")
    sp.add_argument(
        "--replace",
        action="store_true",
        help="drop the committed records and write the experiments' table even when it fills "
        "fewer cells than the committed one",
    )
    sp.add_argument(
        "--scale",
        metavar="SCALE",
        help="show the cells of this scale (data[subset]/<student epochs>ep, e.g. "
        "fashion_mnist/200ep) instead of the records' main one, in results/NAME-SCALE.md; "
        "cells of every scale stay in the records",
    )
    sp = add("queue", cmd_queue, "queue the DVC experiments of a pairs x methods table")
    sp.add_argument("name", help="e.g. srrl_table6 (from the preset in params.yaml)")
    sp.add_argument("--dry-run", action="store_true", help="print the commands only")
    sp = add("preset", cmd_preset, "replace params.yaml with a named preset")
    sp.add_argument("name")
    sp = add("deps", cmd_deps, "dvc.yaml's src deps from the import graph (kdlab.depgraph)")
    mode = sp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's src deps")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdlab`` console script."""
    args = build_parser().parse_args(argv)
    if argv is None:  # a real process (a stage), not a call from Python
        die_with_parent()
    return report_errors(args.command, lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
