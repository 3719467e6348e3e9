"""Mutation check: plant realistic bugs one at a time in a temporary copy of the repository and
run the tests that must catch each; print caught/missed per mutant and caught/total.

    python scripts/mutants.py                    # every mutant, each against its own tests
    python scripts/mutants.py --only dkd_alpha_dropped
    python scripts/mutants.py --tests tests      # every mutant against the whole suite (-x)
    python scripts/mutants.py --check            # locate every mutant; run nothing
    python scripts/mutants.py --src /other/checkout

A mutant is located in the code's structure, not by its line or its exact text: in Python, by
the function (or ``Class.method``) that holds it and the one statement or expression in that
function whose syntax tree equals ``old`` (formatting, comments and line wrapping play no part,
and the function may move anywhere in its file); in dvc.yaml, by the YAML path of the list that
holds the item. ``new`` replaces that node's source. The working tree is never modified: each
mutant is applied to a fresh copy. A mutant that cannot be located (its function is gone, or
``old`` matches no node or more than one) is reported as an ERROR and the tool exits 2.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = "tests/test_stages.py"


@dataclass(frozen=True)
class Patch:
    """Replace the node ``old`` inside ``scope`` of ``file`` by ``new``.

    Python: ``scope`` is a function or ``Class.method``; ``old`` one statement or expression
    (matched by syntax tree); ``new`` the source put in its place (several statements allowed
    when ``old`` is a statement: they take its indentation). YAML: ``scope`` is the dotted path
    of a list, ``old`` one of its items, ``new`` None (the item is removed).
    """

    file: str
    scope: str
    old: str
    new: str | None


@dataclass(frozen=True)
class Mutant:
    name: str
    patches: tuple[Patch, ...]
    tests: tuple[str, ...] = field(default=())  # pytest node ids or files that must catch it


def _m(name: str, tests: list[str], *patches: tuple[str, str, str, str | None]) -> Mutant:
    return Mutant(name, tuple(Patch(*p) for p in patches), tuple(tests))


TRAIN = "src/kdlab/stages/train.py"
DISTILL = "src/kdlab/stages/distill.py"
SOFT = "src/kdlab/softlabels.py"
LOGITS = "src/kdlab/stages/teacher_logits.py"
SPLIT = "src/kdlab/data/split.py"
LOSSES = "src/kdlab/losses.py"
SAVED = f"{STAGES}::test_test_acc_is_the_saved_model_on_the_test_split"
DISTILLED = f"{STAGES}::test_distilled_test_acc_is_the_saved_model_on_the_test_split"
VIEWS = f"{STAGES}::test_teacher_logits_both_views_recomputed"
RESUME = f"{STAGES}::test_a_checkpoint_of_other_params_is_never_resumed"
SOFT_CSV = f"{STAGES}::test_soft_label_csv_matches_an_independent_computation"

MUTANTS: tuple[Mutant, ...] = (
    _m(
        "loaders_swapped_selection_on_test",
        [SAVED],
        (
            TRAIN,
            "train_classifier",
            "train, val, test = loaders(cfg, data, mc, device, seed=seed)",
            "train, test, val = loaders(cfg, data, mc, device, seed=seed)",
        ),
    ),
    _m(
        "soft_labels_without_gamma",
        ["tests/test_softlabels.py", SOFT_CSV],
        (
            SOFT,
            "soft_labels_from_similarity",
            "torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=1)",
            "torch.softmax(z, dim=1)",
        ),
    ),
    _m(
        "soft_labels_self_pairs_kept",
        ["tests/test_softlabels.py", SOFT_CSV],
        (SOFT, "class_similarity", "sums = sums - torch.diag(self_sums)", "sums = sums"),
        (SOFT, "class_similarity", "pairs = pairs - torch.diag(counts)", "pairs = pairs"),
    ),
    _m(
        "soft_labels_dot_not_cosine",
        ["tests/test_softlabels.py", SOFT_CSV],
        (
            SOFT,
            "class_similarity",
            "e = F.normalize(embeddings.double().flatten(1), dim=1)",
            "e = embeddings.double().flatten(1)",
        ),
    ),
    _m(
        "flipped_view_on_unflipped_images",
        [VIEWS],
        (LOGITS, "teacher_logits", "x = b.x.flip(-1) if flip else b.x", "x = b.x"),
    ),
    _m(
        "saved_model_best_val_not_final",
        [SAVED],
        (
            TRAIN,
            "train_classifier",
            'target = paths.TEACHER if role == "teacher" else paths.STUDENT',
            "distiller.load_state_dict(result.best_state)\n"
            'target = paths.TEACHER if role == "teacher" else paths.STUDENT',
        ),
    ),
    _m(
        "dkd_alpha_dropped",
        ["tests/test_method_weights.py"],
        (
            "src/kdlab/methods/dkd.py",
            "DKD.forward_train",
            "self.alpha * self.warmup(epoch) * self.distill_term(logits, batch)",
            "self.warmup(epoch) * self.distill_term(logits, batch)",
        ),
    ),
    _m(
        "reffakd_dkd_columns_and_weights_swapped",
        ["tests/test_method_weights.py"],
        (
            "src/kdlab/methods/reffakd_dkd.py",
            "ReffAKDDKD.distill_term",
            "soft_target_dkd_loss(logits, self.soft_labels[batch.y], batch.y,"
            ' p["tckd_weight"], p["nckd_weight"], p["temperature"], p["reduction"])',
            "soft_target_dkd_loss(logits, self.soft_labels[:, batch.y].t(), batch.y,"
            ' p["nckd_weight"], p["tckd_weight"], p["temperature"], p["reduction"])',
        ),
    ),
    _m(
        "reffakd_columns_not_rows",
        ["tests/test_method_weights.py"],
        (
            "src/kdlab/methods/reffakd.py",
            "ReffAKD.distill_term",
            "targets = self.soft_labels[batch.y]",
            "targets = self.soft_labels[:, batch.y].t()",
        ),
    ),
    _m(
        "label_noise_count_truncated",
        ["tests/test_data.py", f"{STAGES}::test_label_noise_manifest_counts_round"],
        (
            SPLIT,
            "make_split",
            "k = round(label_noise * len(train))",
            "k = int(label_noise * len(train))",
        ),
    ),
    _m(
        "split_overlap",
        ["tests/test_data.py", f"{STAGES}::test_split_is_disjoint_and_covers_the_train_set"],
        (
            SPLIT,
            "make_split",
            "train = pool[val_size:].sort().values",
            "train = pool[val_size // 2 :].sort().values",
        ),
    ),
    _m(
        "kd_teacher_not_tempered",
        ["tests/test_losses.py"],
        (
            LOSSES,
            "kd_loss",
            "log_pt = F.log_softmax(teacher_logits / t, dim=1)",
            "log_pt = F.log_softmax(teacher_logits, dim=1)",
        ),
    ),
    _m(
        "alpha_on_ce_instead_of_kd",
        ["tests/test_method_weights.py"],
        (
            "src/kdlab/methods/base.py",
            "Distiller.ce_term",
            "(1.0 - self.alpha) * F.cross_entropy(logits, labels)",
            "self.alpha * F.cross_entropy(logits, labels)",
        ),
    ),
    _m(
        "teacher_logits_wrong_index",
        [VIEWS],
        (
            LOGITS,
            "teacher_logits",
            "logits[view, b.index.cpu()] = teacher(x).float().cpu()",
            "logits[view, b.index.cpu().flip(0)] = teacher(x).float().cpu()",
        ),
    ),
    # Our own: checkpoint identity, honest test numbers, DVCLive summary, code as a dependency.
    _m(
        "checkpoint_resumed_across_alpha",
        [RESUME],
        (
            DISTILL,
            "distill",
            "[method, cfg.students_seed, cfg.alpha, cfg.temperature, cfg.data.__dict__, "
            "mc.__dict__]",
            "[method, cfg.students_seed, cfg.temperature, cfg.data.__dict__, mc.__dict__]",
        ),
    ),
    _m(
        "checkpoint_resumed_across_method_params",
        [RESUME],
        (DISTILL, "distill", "[cfg.method_params[method], str(device)]", "[str(device)]"),
    ),
    _m(
        "test_acc_reports_validation",
        [SAVED],
        (
            "src/kdlab/fitting.py",
            "evaluate_final_and_best",
            "final = distiller.evaluate(test_loader)",
            "final = result.final",
        ),
    ),
    _m(
        "distill_loaders_swapped",
        [DISTILLED],
        (
            DISTILL,
            "distill",
            "train, val, test = loaders(cfg, data, mc, device, seed=cfg.students_seed)",
            "train, test, val = loaders(cfg, data, mc, device, seed=cfg.students_seed)",
        ),
    ),
    _m(
        "live_summary_without_final_scores",
        ["tests/test_e2e.py::test_repro_runs_every_stage_and_writes_results"],
        (
            "src/kdlab/live.py",
            "EpochLog.finish",
            "self._scores.update({k: record[k] for k in FINAL_SUMMARY if k in record})",
            "self._scores.update({})",
        ),
    ),
    _m(
        "loss_code_not_a_distill_dependency",
        ["tests/test_depgraph.py::test_dvc_yaml_src_deps_are_the_generated_ones"],
        ("dvc.yaml", "stages.distill.do.deps", "src/kdlab/losses.py", None),
    ),
    _m(
        "cae_trained_on_raw_images",
        [f"{STAGES}::test_cae_test_mse_is_the_saved_autoencoder_on_normalised_test_images"],
        (
            TRAIN,
            "train_cae",
            "train, val, test = loaders(cfg, data, mc, device, normalize=mc.normalize)",
            "train, val, test = loaders(cfg, data, mc, device, normalize=False)",
        ),
    ),
    _m(
        "soft_labels_embed_unaugmented_views",
        [f"{STAGES}::test_soft_label_csv_matches_an_independent_computation"],
        (
            "src/kdlab/stages/softlabels.py",
            "embedding_loader",
            'aug = AugmentConfig(**blob["augment"]) if augment and blob.get("augment") else None',
            "aug = None",
        ),
    ),
    _m(
        "distill_saved_model_best_val_not_final",
        [DISTILLED],
        (
            DISTILL,
            "distill",
            "save_model(paths.distilled(method), student, mc, data.spec, extra_state=extra)",
            "distiller.load_state_dict(result.best_state)\n"
            "save_model(paths.distilled(method), student, mc, data.spec, extra_state=extra)",
        ),
    ),
    _m(
        "soft_labels_normalised_over_columns",
        ["tests/test_softlabels.py", SOFT_CSV],
        (
            SOFT,
            "soft_labels_from_similarity",
            "torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=1)",
            "torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=0)",
        ),
    ),
    _m(
        "kd_t_squared_dropped",
        ["tests/test_losses.py"],
        (
            LOSSES,
            "kd_loss",
            "t * t * _kl_from_log_probs(log_pt, log_ps, reduction)",
            "_kl_from_log_probs(log_pt, log_ps, reduction)",
        ),
    ),
)


class LocateError(Exception):
    """A mutant's place is not (or not uniquely) in the code: update the list."""


def _scope_node(tree: ast.Module, scope: str, file: str) -> ast.AST:
    node: ast.AST = tree
    for part in scope.split("."):
        found = [
            n
            for n in ast.iter_child_nodes(node)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and n.name == part
        ]
        if len(found) != 1:
            raise LocateError(f"{file}: {scope}: {len(found)} definitions of {part!r}")
        node = found[0]
    return node


def _pattern(old: str) -> tuple[str, type]:
    """``old``'s syntax tree (without positions) and whether it is an expression or a
    statement."""
    text = textwrap.dedent(old).strip()
    try:
        return ast.dump(ast.parse(text, mode="eval").body), ast.expr
    except SyntaxError:
        body = ast.parse(text).body
        if len(body) != 1:
            raise LocateError(f"old must be one statement or expression: {old!r}") from None
        return ast.dump(body[0]), ast.stmt


def _offset(lines: list[str], line: int, col: int) -> int:
    """Character offset of (1-based line, UTF-8 byte column) in the text split by lines."""
    before = sum(len(s) for s in lines[: line - 1])
    return before + len(lines[line - 1].encode()[:col].decode())


def _locate_python(text: str, p: Patch) -> tuple[int, int, str]:
    tree = ast.parse(text)
    scope = _scope_node(tree, p.scope, p.file)
    want, kind = _pattern(p.old)
    hits = [n for n in ast.walk(scope) if isinstance(n, kind) and ast.dump(n) == want]
    if len(hits) != 1:
        raise LocateError(f"{p.file}: {p.scope}: {p.old!r} matches {len(hits)} nodes")
    node = hits[0]
    lines = text.splitlines(keepends=True)
    start = _offset(lines, node.lineno, node.col_offset)
    end = _offset(lines, node.end_lineno, node.end_col_offset)
    indent = " " * node.col_offset
    new = textwrap.dedent(p.new).strip().replace("\n", "\n" + indent)
    return start, end, new


def _locate_yaml(text: str, p: Patch) -> tuple[int, int, str]:
    node = yaml.compose(text)
    for key in p.scope.split("."):
        if not isinstance(node, yaml.MappingNode):
            raise LocateError(f"{p.file}: {p.scope}: {key!r} is not under a mapping")
        found = [v for k, v in node.value if k.value == key]
        if len(found) != 1:
            raise LocateError(f"{p.file}: {p.scope}: {len(found)} keys {key!r}")
        node = found[0]
    if not isinstance(node, yaml.SequenceNode):
        raise LocateError(f"{p.file}: {p.scope} is not a list")
    items = [n for n in node.value if isinstance(n, yaml.ScalarNode) and n.value == p.old]
    if len(items) != 1:
        raise LocateError(f"{p.file}: {p.scope}: {p.old!r} occurs {len(items)} times")
    item = items[0]
    # The whole line of the item ("  - path  # comment\n").
    start = text.rfind("\n", 0, item.start_mark.index) + 1
    end = text.find("\n", item.end_mark.index)
    return start, len(text) if end < 0 else end + 1, ""


def apply_patch(text: str, p: Patch) -> str:
    """``text`` with ``p`` applied; LocateError when its place is not unique."""
    locate = _locate_yaml if p.file.endswith((".yaml", ".yml")) else _locate_python
    start, end, new = locate(text, p)
    out = text[:start] + new + text[end:]
    if p.file.endswith(".py"):
        ast.parse(out)  # a mutant is still valid Python
    if out == text:
        raise LocateError(f"{p.file}: {p.scope}: the patch changes nothing")
    return out


def mutate(root: Path, mutant: Mutant) -> dict[str, str]:
    """The files of ``root`` that ``mutant`` changes, mutated (nothing is written)."""
    files: dict[str, str] = {}
    for p in mutant.patches:
        path = root / p.file
        if p.file not in files and not path.exists():
            raise LocateError(f"{p.file}: no such file")
        files[p.file] = apply_patch(files.get(p.file) or path.read_text(), p)
    return files


TOP = {".git", ".venv", ".dvc", "data", "metrics", "plots", "tables", "dvclive", "results"}
ANY = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info")


def _copy(src: Path, dest: Path) -> None:
    def ignore(folder, names):  # workspace outputs only at the top level (src/kdlab/data stays)
        top = {n for n in names if n in TOP} if Path(folder) == src else set()
        return top | ANY(folder, names)

    shutil.copytree(src, dest, ignore=ignore, symlinks=True)


def run_mutant(src: Path, mutant: Mutant, tests: list[str] | None) -> tuple[bool, str]:
    """Apply ``mutant`` to a copy of ``src`` and run its tests: (caught, pytest's last line)."""
    with tempfile.TemporaryDirectory(prefix="kdlab-mutant-") as tmp:
        copy = Path(tmp) / "repo"
        _copy(src, copy)
        for file, text in mutate(copy, mutant).items():
            (copy / file).write_text(text)
        env = dict(
            os.environ, PYTHONPATH=str(copy / "src"), KDLAB_PROGRESS="0", DVC_NO_ANALYTICS="1"
        )
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        r = subprocess.run(
            [*cmd, *(tests or mutant.tests or ["tests"])],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        last = (r.stdout.strip().splitlines() or [""])[-1]
        return r.returncode != 0, last


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=Path(os.environ.get("MUTANT_SRC", REPO)))
    ap.add_argument("--only", nargs="*", default=os.environ.get("MUTANT_ONLY", "").split())
    ap.add_argument(
        "--tests",
        nargs="*",
        default=os.environ.get("MUTANT_TESTS", "").split(),
        help="run these tests against every mutant instead of each mutant's own",
    )
    ap.add_argument("--check", action="store_true", help="locate every mutant; run nothing")
    ap.add_argument("--list", action="store_true", help="print each mutant and its tests")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}: {' '.join(m.tests)}")
        return 0
    errors = 0
    for m in chosen:  # every mutant must be locatable before anything runs
        try:
            mutate(args.src, m)
        except LocateError as err:
            errors += 1
            print(f"ERROR  {m.name}: {err}", flush=True)
    if args.check or errors:
        print(f"{len(chosen) - errors}/{len(chosen)} mutants located")
        return 2 if errors else 0
    caught = 0
    for m in chosen:
        hit, last = run_mutant(args.src, m, args.tests)
        caught += hit
        print(f"{'caught' if hit else 'MISSED'} {m.name}  ({last})", flush=True)
    print(f"caught {caught}/{len(chosen)}")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
