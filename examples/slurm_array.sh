#!/usr/bin/env bash
# One recipe over a fleet of checkpoint directories as a Slurm job array. Each array task patches its own share
# of the directories (batch reads --task-index/--task-count from SLURM_ARRAY_TASK_ID, _MIN and _COUNT: every
# N-th directory from the task's index, the same share on every run) and appends one JSON line per directory to
# a report of its own. Merge them, and see what failed, with batch-report:
#
#   ls -d /models/* > dirs.txt
#   sbatch --array=0-15 examples/slurm_array.sh
#   vocabsurgeon batch-report reports/*.jsonl
#
# Re-submitting the array is safe: a directory whose output records the same recipe and source is skipped.
# The variables below can be set in the environment (sbatch --export=ALL,RECIPE=...).
#
#SBATCH --job-name=vocabsurgeon
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
#SBATCH --output=reports/slurm-%A_%a.out
set -euo pipefail

RECIPE=${RECIPE:-examples/recipe.toml}
DIRS=${DIRS:-dirs.txt}          # one checkpoint directory per line
OUT_ROOT=${OUT_ROOT:-patched}   # each output goes to OUT_ROOT/<directory name>
REPORTS=${REPORTS:-reports}
VOCABSURGEON=${VOCABSURGEON:-vocabsurgeon}

mkdir -p "$REPORTS"
# shellcheck disable=SC2086  # VOCABSURGEON may be a command with arguments ("python -m vocabsurgeon")
exec $VOCABSURGEON batch "$RECIPE" "@$DIRS" --out-root "$OUT_ROOT" --jobs "${SLURM_CPUS_PER_TASK:-1}" \
    --report "$REPORTS/task-${SLURM_ARRAY_TASK_ID:-0}.jsonl" -q
