#!/usr/bin/env bash
# Mutation check: plant realistic bugs one at a time in a temporary copy of the repository and
# run the test suite against each; print caught/missed per mutant and caught/total.
#
#   scripts/mutants.sh                      # every mutant, `pytest -x -q tests`
#   MUTANT_TESTS="tests/test_stages.py tests/test_method_weights.py" scripts/mutants.sh
#   MUTANT_ONLY=dkd_alpha_dropped scripts/mutants.sh
#   MUTANT_SRC=/path/to/other/checkout scripts/mutants.sh   # the code and tests to mutate
#
# The working tree is never modified. A mutant whose pattern is no longer found in its file is
# reported as an ERROR (update the list when the code moves) and makes the script exit 2.
set -euo pipefail
SRC="${MUTANT_SRC:-$(cd "$(dirname "$0")/.." && pwd)}"
PY="${PYTHON:-python}"
exec "$PY" - "$SRC" <<'PYEOF'
import os, shutil, subprocess, sys, tempfile
from pathlib import Path

src = Path(sys.argv[1])
tests = os.environ.get("MUTANT_TESTS", "tests").split()
only = os.environ.get("MUTANT_ONLY")

# name: [(file, old, new), ...]; every old must occur exactly once in its file.
MUTANTS = {
    "loaders_swapped_selection_on_test": [(
        "src/kdlab/stages/train.py",
        "train, val, test = loaders(cfg, data, mc, device)",
        "train, test, val = loaders(cfg, data, mc, device)",
    )],
    "soft_labels_without_gamma": [(
        "src/kdlab/softlabels.py",
        "return torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=1)",
        "return torch.softmax(z, dim=1)",
    )],
    "soft_labels_self_pairs_kept": [
        ("src/kdlab/softlabels.py", "sums = sums - torch.diag(self_sums)", "sums = sums"),
        ("src/kdlab/softlabels.py", "pairs = pairs - torch.diag(counts)", "pairs = pairs"),
    ],
    "soft_labels_dot_not_cosine": [(
        "src/kdlab/softlabels.py",
        "e = F.normalize(embeddings.double().flatten(1), dim=1)",
        "e = embeddings.double().flatten(1)",
    )],
    "flipped_view_on_unflipped_images": [(
        "src/kdlab/stages/teacher_logits.py",
        "x = b.x.flip(-1) if flip else b.x",
        "x = b.x",
    )],
    "saved_model_best_val_not_final": [(
        "src/kdlab/stages/train.py",
        "    target = paths.TEACHER if role",
        "    distiller.load_state_dict(result.best_state)\n    target = paths.TEACHER if role",
    )],
    "dkd_alpha_dropped": [(
        "src/kdlab/methods/dkd.py",
        '"dkd": self.alpha * self.warmup(epoch) * self.distill_term(logits, batch)',
        '"dkd": self.warmup(epoch) * self.distill_term(logits, batch)',
    )],
    "reffakd_dkd_columns_and_weights_swapped": [(
        "src/kdlab/methods/reffakd_dkd.py",
        'self.soft_labels[batch.y],\n            batch.y,\n            p["tckd_weight"],\n'
        '            p["nckd_weight"],',
        'self.soft_labels[:, batch.y].t(),\n            batch.y,\n            p["nckd_weight"],\n'
        '            p["tckd_weight"],',
    )],
    "reffakd_columns_not_rows": [(
        "src/kdlab/methods/reffakd.py",
        "targets = self.soft_labels[batch.y]",
        "targets = self.soft_labels[:, batch.y].t()",
    )],
    "label_noise_count_truncated": [(
        "src/kdlab/data/split.py",
        "k = round(label_noise * len(train))",
        "k = int(label_noise * len(train))",
    )],
    "split_overlap": [(
        "src/kdlab/data/split.py",
        "train = pool[val_size:].sort().values",
        "train = pool[val_size // 2 :].sort().values",
    )],
    "kd_teacher_not_tempered": [(
        "src/kdlab/losses.py",
        "    log_pt = F.log_softmax(teacher_logits / t, dim=1)\n    return t * t *",
        "    log_pt = F.log_softmax(teacher_logits, dim=1)\n    return t * t *",
    )],
    "alpha_on_ce_instead_of_kd": [(
        "src/kdlab/methods/base.py",
        "return (1.0 - self.alpha) * F.cross_entropy(logits, labels)",
        "return self.alpha * F.cross_entropy(logits, labels)",
    )],
    "teacher_logits_wrong_index": [(
        "src/kdlab/stages/teacher_logits.py",
        "logits[view, b.index.cpu()] = teacher(x).float().cpu()",
        "logits[view, b.index.cpu().flip(0)] = teacher(x).float().cpu()",
    )],
    # Our own: checkpoint identity, honest test numbers, DVCLive summary, code as a dependency.
    "checkpoint_resumed_across_alpha": [(
        "src/kdlab/stages/distill.py",
        "[method, cfg.seed, cfg.alpha, cfg.temperature,",
        "[method, cfg.seed, cfg.temperature,",
    )],
    "checkpoint_resumed_across_method_params": [(
        "src/kdlab/stages/distill.py",
        "+ [cfg.method_params[method], str(device)]",
        "+ [str(device)]",
    )],
    "test_acc_reports_validation": [(
        "src/kdlab/stages/train.py",
        "final = distiller.evaluate(test_loader)\n",
        "final = result.final\n",
    )],
    "distill_loaders_swapped": [(
        "src/kdlab/stages/distill.py",
        "train, val, test = loaders(cfg, data, mc, device)",
        "train, test, val = loaders(cfg, data, mc, device)",
    )],
    "live_summary_without_final_scores": [(
        "src/kdlab/live.py",
        "self._scores.update({k: record[k] for k in FINAL_SUMMARY if k in record})",
        "self._scores.update({})",
    )],
    "loss_code_not_a_distill_dependency": [(
        "dvc.yaml",
        "        - src/kdlab/losses.py\n",
        "",
    )],
    "cae_trained_on_normalised_images": [(
        "src/kdlab/stages/train.py",
        "train, val, test = loaders(cfg, data, mc, device, normalize=False)",
        "train, val, test = loaders(cfg, data, mc, device, normalize=True)",
    )],
    "distill_saved_model_best_val_not_final": [(
        "src/kdlab/stages/distill.py",
        "    save_model(paths.distilled(method), student,",
        "    distiller.load_state_dict(result.best_state)\n"
        "    save_model(paths.distilled(method), student,",
    )],
    "soft_labels_normalised_over_columns": [(
        "src/kdlab/softlabels.py",
        "return torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=1)",
        "return torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=0)",
    )],
    "kd_t_squared_dropped": [(
        "src/kdlab/losses.py",
        "return t * t * _kl_from_log_probs(log_pt, log_ps, reduction)",
        "return _kl_from_log_probs(log_pt, log_ps, reduction)",
    )],
}

TOP = {".git", ".venv", ".dvc", "data", "metrics", "plots", "tables", "dvclive"}
ANY = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info")


def IGNORE(folder, names):  # workspace outputs only at the top level (src/kdlab/data stays)
    top = {n for n in names if n in TOP} if Path(folder) == src else set()
    return top | ANY(folder, names)
caught = total = errors = 0
for name, patches in MUTANTS.items():
    if only and name != only:
        continue
    with tempfile.TemporaryDirectory(prefix="kdlab-mutant-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(src, copy, ignore=IGNORE, symlinks=True)
        bad = None
        for file, old, new in patches:
            path = copy / file
            text = path.read_text() if path.exists() else ""
            if text.count(old) != 1:
                bad = f"{file}: pattern found {text.count(old)} times: {old.splitlines()[0]!r}"
                break
            path.write_text(text.replace(old, new))
        if bad:
            errors += 1
            print(f"ERROR  {name}: {bad}", flush=True)
            continue
        env = dict(os.environ, PYTHONPATH=str(copy / "src"), KDLAB_PROGRESS="0",
                   DVC_NO_ANALYTICS="1")
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=copy, env=env, capture_output=True, text=True,
        )
        total += 1
        hit = r.returncode != 0
        caught += hit
        last = (r.stdout.strip().splitlines() or [""])[-1]
        print(f"{'caught' if hit else 'MISSED'} {name}  ({last})", flush=True)
print(f"caught {caught}/{total}" + (f"; {errors} mutant(s) could not be applied" if errors else ""))
sys.exit(2 if errors else 0)
PYEOF
