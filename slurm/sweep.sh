#!/usr/bin/env bash
# Hyperparameter sweep: every combination of a grid of mlai_train settings as one Slurm job
# array, one task (one training run) per combination, all logging into one study folder;
# slurm/sweep_report.py then ranks the runs. Run from the repository root:
#
#   bash slurm/sweep.sh [options] -- [mlai_train flags every run shares]
#
#   bash slurm/sweep.sh --grid lr=0.1,0.03,0.01 --grid weight-decay=5e-4,1e-4 --max-parallel 4 \
#       --study r18-lr -- --arch resnet18_cifar --dataset cifar10 --epochs 30 --precision 16
#   bash slurm/sweep.sh --grid lr=1e-3,3e-3 --grid nesterov=on,off --gpus-per-node 0 --wait \
#       -- --device cpu --optimizer sgd
#   bash slurm/sweep.sh --random 20 --grid lr=log:1e-4:1e-1 --grid weight-decay=log:1e-5:1e-2 \
#       --grid batch-size=64,128,256 --grid dropout=range:0:0.5 -- --epochs 10
#
# Options (default in brackets):
#   --grid FLAG=V1,V2,...  a setting and its values (FLAG as mlai_train's, without --); repeatable:
#                          the sweep runs every combination once. For a switch (a flag without a
#                          value, like nesterov or sync-bn) the values are on and off.
#   --random N             random search instead of the grid: N runs, each setting drawn on its
#                          own (a list: one of its values, evenly; log:LO:HI: log-uniform;
#                          range:LO:HI: uniform; int:LO:HI: a whole number in [LO, HI])
#   --seed S               the random search's seed [0]: the same seed draws the same runs
#   --max-parallel N       at most N runs at a time (the array's %N) [no limit]
#   --nodes N              nodes per run [1]
#   --tasks-per-node T     ranks per node of each run [1]
#   --gpus-per-node G      GPUs per node, one per rank [T]; 0 on CPU nodes (pass --device cpu)
#   --cpus-per-task C      cores per rank [8]
#   --partition P          the partition [the cluster's default]
#   --time T               time limit of each run [01:00:00]; a run stopped by it continues when
#                          the sweep (or its job script) is submitted again, as train.sbatch does
#   --sbatch OPT           one more #SBATCH line, repeatable: --sbatch --account=abc
#   --study NAME           the study's name [sweep-<date>-<time>]
#   --study-dir DIR        where its runs, job script and outputs go [logs/NAME]
#   --train PATH           the binary [$MLAI_TRAIN, else build/bin/mlai_train]
#   --wait                 wait for the array to end, then write the report
#   --dry-run              print the job script; submit nothing
#
# The study folder holds sweep.tsv (each task's combination and experiment), sweep.sbatch (the
# array's job script: `sbatch sweep.sbatch` submits the sweep again, and unfinished runs resume
# from their last.h5), and one experiment folder per run, <study>-<task>/version_<job id>/,
# each with its metrics.csv, hparams.json, TensorBoard events and checkpoints, so
# `tensorboard --logdir <study folder>` shows every run side by side. Each task runs
# slurm/train.sbatch's steps (auto-resume, requeue with MLAI_REQUEUE, srun --mpi=pmix).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "sweep.sh: $*" >&2; exit 2; }

grids=()
random_runs=""
seed=0
max_parallel=""
nodes=1
tpn=1
gpus=""
cpus=8
partition=""
time_limit=01:00:00
extra=()
study=""
study_dir=""
train=${MLAI_TRAIN:-build/bin/mlai_train}
wait_jobs=0
dry_run=0

while [ $# -gt 0 ]; do
  opt=$1 val=""
  case "$opt" in
    --*=*) val=${opt#*=} opt=${opt%%=*} ;;
  esac
  case "$opt" in
    --grid | --random | --seed | --max-parallel | --nodes | --tasks-per-node | --gpus-per-node | --cpus-per-task | \
      --partition | --time | --sbatch | --study | --study-dir | --train)
      if [ "$1" = "$opt" ]; then
        [ $# -ge 2 ] || die "$opt needs a value"
        val=$2
        shift
      fi
      ;;
  esac
  case "$opt" in
    --grid) grids+=("$val") ;;
    --random) random_runs=$val ;;
    --seed) seed=$val ;;
    --max-parallel) max_parallel=$val ;;
    --nodes) nodes=$val ;;
    --tasks-per-node) tpn=$val ;;
    --gpus-per-node) gpus=$val ;;
    --cpus-per-task) cpus=$val ;;
    --partition) partition=$val ;;
    --time) time_limit=$val ;;
    --sbatch) extra+=("$val") ;;
    --study) study=$val ;;
    --study-dir) study_dir=$val ;;
    --train) train=$val ;;
    --wait) wait_jobs=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (mlai_train flags go after --; see --help)" ;;
  esac
  shift
done
common=("$@")

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$nodes" || die "--nodes: '$nodes' is not a positive whole number"
is_count "$tpn" || die "--tasks-per-node: '$tpn' is not a positive whole number"
[ -n "$gpus" ] || gpus=$tpn
[[ "$gpus" =~ ^[0-9]+$ ]] || die "--gpus-per-node: '$gpus' is not a whole number"
if [ "$gpus" -gt 0 ] && [ "$tpn" -gt "$gpus" ]; then
  die "$tpn ranks per node but --gpus-per-node $gpus: one rank per GPU (0 for CPU nodes)"
fi
is_count "$cpus" || die "--cpus-per-task: '$cpus' is not a positive whole number"
[ -z "$random_runs" ] || is_count "$random_runs" ||
  die "--random: '$random_runs' is not a positive whole number (the runs to draw)"
[[ "$seed" =~ ^[0-9]+$ ]] || die "--seed: '$seed' is not a whole number"
[ -z "$max_parallel" ] || is_count "$max_parallel" ||
  die "--max-parallel: '$max_parallel' is not a positive whole number"
[[ "$study" =~ ^[A-Za-z0-9._-]*$ ]] || die "--study: use letters, digits, '.', '_' and '-' only"
[ ${#grids[@]} -gt 0 ] || die "no --grid FLAG=V1,V2,...: nothing to sweep"

# ---- The grid -----------------------------------------------------------------------------------
names=()   # the swept flags, without --
values=()  # per flag, its values separated by newlines (a list), or "LO HI" (a distribution)
kinds=()   # per flag: list, log, range or int
is_num() { [[ "$1" =~ ^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; }
for g in "${grids[@]}"; do
  [[ "$g" == *=* ]] || die "--grid $g: expected FLAG=V1,V2,... (like lr=0.1,0.01)"
  name=${g%%=*} list=${g#*=}
  name=${name#--}
  [[ "$name" =~ ^[a-z][a-z0-9-]*$ ]] || die "--grid $g: '$name' is not an mlai_train flag name"
  for n in ${names[@]+"${names[@]}"}; do [ "$n" != "$name" ] || die "--grid: $name given twice"; done
  case "$name" in
    log-dir | experiment-name | resume) die "--grid $name: the sweep sets each run's $name" ;;
  esac
  for a in ${common[@]+"${common[@]}"}; do
    case "$a" in
      "--$name" | "--$name="*) die "--$name is both swept (--grid) and given after --" ;;
    esac
  done
  [[ "$list" != *[[:space:]]* ]] || die "--grid $g: no spaces in the values (V1,V2,...)"
  case "$list" in
    log:* | range:* | int:*)  # a distribution, for --random
      [ -n "$random_runs" ] || die "--grid $g: a distribution needs --random N (the grid takes lists)"
      IFS=: read -r kind lo hi extra_field <<< "$list"
      { [ -z "${extra_field:-}" ] && is_num "$lo" && is_num "$hi" &&
        awk -v a="$lo" -v b="$hi" 'BEGIN { exit !(a + 0 < b + 0) }'; } ||
        die "--grid $g: expected $kind:LO:HI with numbers LO < HI"
      [ "$kind" != log ] || awk -v a="$lo" 'BEGIN { exit !(a + 0 > 0) }' ||
        die "--grid $g: log:LO:HI needs LO > 0"
      [ "$kind" != int ] || { [[ "$lo" =~ ^-?[0-9]+$ ]] && [[ "$hi" =~ ^-?[0-9]+$ ]]; } ||
        die "--grid $g: int:LO:HI needs whole numbers"
      names+=("$name")
      values+=("$lo $hi")
      kinds+=("$kind")
      continue
      ;;
  esac
  [[ "$list" != *, && "$list" != ,* ]] || die "--grid $g: an empty value"
  IFS=, read -r -a vs <<< "$list"
  [ ${#vs[@]} -gt 0 ] || die "--grid $g: no values"
  for v in "${vs[@]}"; do [ -n "$v" ] || die "--grid $g: an empty value"; done
  names+=("$name")
  values+=("$(printf '%s\n' "${vs[@]}")")
  kinds+=(list)
done
for a in ${common[@]+"${common[@]}"}; do
  case "$a" in
    --log-dir | --log-dir=* | --experiment-name | --experiment-name=* | --resume | --resume=*)
      die "${a%%=*}: the sweep sets each run's log folder and experiment; do not pass it" ;;
    --fast-dev-run | --fast-dev-run=*)
      die "--fast-dev-run writes no metrics: use --epochs and --limit-train-batches for a short sweep" ;;
  esac
done

# The runs, one per task, their values tab-separated: every combination of the grid, the first
# --grid varying slowest; or --random's draws (awk's generator, seeded: reproducible).
combos=("")
if [ -z "$random_runs" ]; then
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    next=()
    while IFS= read -r v; do
      for c in "${combos[@]}"; do next+=("$v${c:+$'\t'$c}"); done
    done <<< "${values[$i]}"
    combos=("${next[@]}")
  done
else
  mapfile -t combos < <(
    for i in "${!names[@]}"; do
      printf '%s\t%s\n' "${kinds[$i]}" "$(tr '\n' ' ' <<< "${values[$i]}")"
    done | awk -F'\t' -v runs="$random_runs" -v seed="$seed" '
      { kind[NR] = $1; n[NR] = split($2, v, " "); for (j = 1; j <= n[NR]; j++) val[NR, j] = v[j] }
      END {
        srand(seed)
        for (r = 0; r < runs; r++) {
          line = ""
          for (f = 1; f <= NR; f++) {
            u = rand()
            if (kind[f] == "list") x = val[f, int(u * n[f]) + 1]
            else if (kind[f] == "log") x = sprintf("%.3g", exp(log(val[f, 1]) + u * (log(val[f, 2]) - log(val[f, 1]))))
            else if (kind[f] == "range") x = sprintf("%.3g", val[f, 1] + u * (val[f, 2] - val[f, 1]))
            else x = val[f, 1] + int(u * (val[f, 2] - val[f, 1] + 1))
            line = line (f > 1 ? "\t" : "") x
          }
          print line
        }
      }'
  )
fi
n_tasks=${#combos[@]}

# One task's mlai_train flags: --FLAG VALUE, or for on/off values of a switch --FLAG or nothing.
trial_flags() {  # trial_flags COMBO -> the flags, shell-quoted on one line
  local -a cv out=()
  IFS=$'\t' read -r -a cv <<< "$1"
  for i in "${!names[@]}"; do
    case "${cv[$i]}" in
      on) out+=("--${names[$i]}") ;;
      off) ;;
      *) out+=("--${names[$i]}" "${cv[$i]}") ;;
    esac
  done
  [ ${#out[@]} -eq 0 ] || printf '%q ' "${out[@]}"
}

# ---- Paths --------------------------------------------------------------------------------------
[ -n "$study" ] || study=sweep-$(date +%Y%m%d-%H%M%S)
study_dir=$(realpath -m "${study_dir:-logs/$study}")
submit_dir=$PWD
repo=$(realpath "$(dirname "$0")/..")
train=$(realpath -m "$train")
if [ ! -x "$train" ]; then
  msg="no mlai_train at $train: build it, or pass --train PATH (or set MLAI_TRAIN)"
  if [ "$dry_run" = 1 ]; then echo "sweep.sh: warning: $msg" >&2; else die "$msg"; fi
fi

# ---- The array's job script ---------------------------------------------------------------------
job_script() {
  local k
  cat << EOF
#!/bin/bash
# Sweep $study: $n_tasks run(s), one array task each, over ${names[*]}${random_runs:+ (random search, seed $seed)}. Written by
# slurm/sweep.sh on $(date '+%Y-%m-%d %H:%M'); to submit it again (unfinished runs resume from
# their last.h5): sbatch $study_dir/sweep.sbatch
# The job inherits the environment of the shell that submits it (sbatch's default --export=ALL):
# load the modules the binary was built with before submitting.

# ---- Resources (of each run) --------------------------------------------------------------------
#SBATCH --job-name=$study
#SBATCH --array=0-$((n_tasks - 1))${max_parallel:+%$max_parallel}
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tpn
EOF
  if [ "$gpus" -gt 0 ]; then
    echo "# One GPU per rank; each rank uses the GPU of its local rank."
    echo "#SBATCH --gpus-per-node=$gpus"
  fi
  echo "#SBATCH --cpus-per-task=$cpus"
  echo "#SBATCH --time=$time_limit"
  [ -n "$partition" ] && echo "#SBATCH --partition=$partition"
  for opt in ${extra[@]+"${extra[@]}"}; do echo "#SBATCH $opt"; done
  cat << EOF
# SIGUSR1 120 s before the time limit: the run saves last.h5 and stops (see train.sbatch).
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
# %a: the task (the run), %A: the array's job id.
#SBATCH --output=$study_dir/$study-%a-%A.out
#SBATCH --chdir=$submit_dir

if [ -z "\${SLURM_ARRAY_TASK_ID:-}" ]; then
  echo "This is a Slurm job-array script and this is not an array task (no SLURM_ARRAY_TASK_ID)." >&2
  echo "Submit it: sbatch $study_dir/sweep.sbatch" >&2
  exit 1
fi
set -euo pipefail

# Each task's settings (sweep.tsv lists them by name).
trials=(
EOF
  for k in "${!combos[@]}"; do
    t=$(trial_flags "${combos[$k]}")
    t=${t% }
    if [[ "$t" != *\'* ]]; then printf "  '%s'  # %d\n" "$t" "$k"; else printf '  %q  # %d\n' "$t" "$k"; fi
  done
  cat << EOF
)
trial=\${trials[\$SLURM_ARRAY_TASK_ID]}
eval "trial=(\$trial)"
# train.sbatch does the rest: resume (MLAI_RESUME, auto by default), requeue (MLAI_REQUEUE),
# threads, srun --mpi=pmix. Each run is its own experiment in the study folder.
export MLAI_TRAIN=$(printf '%q' "$train")
export MLAI_LOG_DIR=$(printf '%q' "$study_dir")
export MLAI_EXPERIMENT=$study-\$SLURM_ARRAY_TASK_ID
# Submitted again, the sweep finishes what is unfinished: a run that finished (a "test" row in
# its metrics.csv) is not run again, unless MLAI_RESUME=no.
if [ "\${MLAI_RESUME:-auto}" != no ]; then
  for m in "\$MLAI_LOG_DIR/\$MLAI_EXPERIMENT"/version_*/metrics.csv; do
    if [ -f "\$m" ] && grep -q '^test,' "\$m"; then
      echo "run \$MLAI_EXPERIMENT finished already (\${m%/metrics.csv}): nothing to do"
      exit 0
    fi
  done
fi
EOF
  printf 'exec bash %q' "$repo/slurm/train.sbatch"
  [ ${#common[@]} -eq 0 ] || printf ' %q' "${common[@]}"
  # shellcheck disable=SC2016  # expanded in the job, not here
  printf ' ${trial[@]+"${trial[@]}"}\n'
}

if [ "$dry_run" = 1 ]; then
  echo "# Sweep $study in $study_dir: $n_tasks run(s) (dry run: nothing submitted)"
  job_script
  exit 0
fi

# ---- Submit -------------------------------------------------------------------------------------
if ! command -v sbatch > /dev/null; then
  echo "sweep.sh: sbatch not found: this submits Slurm jobs, so run it where Slurm's commands" \
    "work (a login node; module load slurm at some sites), or try it on a local cluster:" \
    "eval \"\$(bash scripts/slurm-local.sh start)\". --dry-run prints the job script without Slurm." >&2
  exit 1
fi
if ! sub=$(job_script | sbatch --test-only 2>&1); then
  echo "sweep.sh: Slurm refuses the array: ${sub##*error: }; nothing submitted" >&2
  exit 1
fi
mkdir -p "$study_dir"
[ ! -e "$study_dir/sweep.tsv" ] ||
  die "$study_dir already holds a sweep: submit its sweep.sbatch again to continue it, or pick another --study"
{
  printf 'task\texperiment'
  printf '\t%s' "${names[@]}"
  printf '\n'
  for k in "${!combos[@]}"; do printf '%d\t%s\t%s\n' "$k" "$study-$k" "${combos[$k]}"; done
} > "$study_dir/sweep.tsv"
job_script > "$study_dir/sweep.sbatch"
submitted=$(sbatch --parsable "$study_dir/sweep.sbatch")
job=${submitted%%;*}
echo "$job" > "$study_dir/array_job_id"
echo "sweep $study: $n_tasks run(s) as job array $job${max_parallel:+ (at most $max_parallel at a time)}; runs in $study_dir"
if [ "$wait_jobs" = 0 ]; then
  echo "when the array has ended: python3 $repo/slurm/sweep_report.py $study_dir"
  exit 0
fi

# ---- Wait and report ----------------------------------------------------------------------------
echo "waiting for job array $job to end ..."
while true; do
  # (a failed squeue, as while slurmctld is busy, is asked again, not taken as "ended")
  if left=$(squeue -h -j "$job" -o %i 2> /dev/null) && [ -z "$left" ]; then break; fi
  sleep 5
done
python3 "$repo/slurm/sweep_report.py" "$study_dir"
