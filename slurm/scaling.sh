#!/usr/bin/env bash
# Scaling study: the same mlai_train run at several sizes (node counts, or ranks on one node), one
# Slurm job per size, all logging into one study folder; slurm/scaling_report.py then writes the
# table (scaling.md) and the plot (scaling.png). Run from the repository root:
#
#   bash slurm/scaling.sh [options] -- [mlai_train flags]
#
#   bash slurm/scaling.sh --nodes 1,2,4,8 --study mlp-weak -- --epochs 3
#   bash slurm/scaling.sh --ranks 1,2,4 --gpus-per-node 0 --cpus-per-task 1 --wait -- --device cpu
#   bash slurm/scaling.sh --nodes 1,2,4 --strategies ddp,fsdp,hybrid_shard --wait -- --arch resnet18
#
# Options (default in brackets):
#   --nodes LIST           node counts, e.g. 1,2,4,8 [1,2,4,8], each with --tasks-per-node ranks
#   --tasks-per-node LIST  ranks per node [4]; a list (1,2,4) sweeps the ranks on one --nodes count
#   --ranks LIST           total ranks instead of --nodes: R ranks on one node while R <= T, else
#                          R/T full nodes of T ranks (T: --tasks-per-node)
#   --gpus-per-node N      GPUs per node, one per rank [4]; 0 on CPU nodes (pass --device cpu)
#   --cpus-per-task N      cores per rank: training thread, loader workers, BLAS threads [8]
#   --partition P          the partition [the cluster's default]
#   --time T               time limit of each job [00:20:00]
#   --sbatch OPT           one more #SBATCH line, repeatable: --sbatch --account=abc
#   --no-exclusive         share nodes with other jobs (cheaper to get, noisier timings)
#   --strong               strong scaling: --batch-size is the global batch, split over the ranks
#   --strategies LIST      the same points under each --strategy (e.g. ddp,fsdp,hybrid_shard):
#                          one study per strategy, <study>-<strategy> in <study folder>/<strategy>,
#                          run with --log-device-stats (memory per rank); the report then
#                          compares them side by side (comparison.md and .png in the study folder)
#   --study NAME           the study's name [scaling-<date>-<time>]
#   --study-dir DIR        where its runs, job scripts and outputs go [logs/NAME]
#   --train PATH           the binary [$MLAI_TRAIN, else build/bin/mlai_train]
#   --wait                 wait for all jobs to end, then write the report
#   --dry-run              print the job scripts; submit nothing
#
# Weak scaling by default, as in Lightning and PyTorch DDP: --batch-size is per rank and stays
# fixed, so the global batch and the work per step grow with the ranks, and ideal images/s grow
# in proportion to the ranks. Each point runs as experiment <study>-n<nodes> (a --nodes sweep) or
# <study>-r<ranks> (a --ranks or --tasks-per-node sweep) under the study folder, whose jobs.tsv
# lists the points and their job ids. Then: python3 slurm/scaling_report.py <study folder>.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "scaling.sh: $*" >&2; exit 2; }

nodes_list=1,2,4,8
nodes_given=0
tpn_list=4
ranks_list=""
gpus=4
cpus=8
partition=""
time_limit=00:20:00
extra=()
exclusive=1
scaling=weak
study=""
study_dir=""
train=${MLAI_TRAIN:-build/bin/mlai_train}
wait_jobs=0
dry_run=0
strategies_list=""

while [ $# -gt 0 ]; do
  opt=$1 val=""
  case "$opt" in
    --*=*) val=${opt#*=} opt=${opt%%=*} ;;
  esac
  case "$opt" in
    --nodes | --tasks-per-node | --ranks | --gpus-per-node | --cpus-per-task | --partition | \
      --time | --sbatch | --study | --study-dir | --train | --strategies)
      if [ "$1" = "$opt" ]; then
        [ $# -ge 2 ] || die "$opt needs a value"
        val=$2
        shift
      fi
      ;;
  esac
  case "$opt" in
    --nodes) nodes_list=$val nodes_given=1 ;;
    --tasks-per-node) tpn_list=$val ;;
    --ranks) ranks_list=$val ;;
    --gpus-per-node) gpus=$val ;;
    --cpus-per-task) cpus=$val ;;
    --partition) partition=$val ;;
    --time) time_limit=$val ;;
    --sbatch) extra+=("$val") ;;
    --no-exclusive) exclusive=0 ;;
    --strong) scaling=strong ;;
    --study) study=$val ;;
    --study-dir) study_dir=$val ;;
    --train) train=$val ;;
    --strategies) strategies_list=$val ;;
    --wait) wait_jobs=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (mlai_train flags go after --; see --help)" ;;
  esac
  shift
done
train_args=("$@")

# ---- The points of the study --------------------------------------------------------------------
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
parse_list() {  # parse_list FLAG LIST: the counts, sorted, one per line
  local item out=()
  IFS=, read -r -a items <<< "$2"
  [ ${#items[@]} -gt 0 ] || die "$1: empty list"
  for item in "${items[@]}"; do
    is_count "$item" || die "$1: '$item' is not a positive whole number"
    out+=("$item")
  done
  printf '%s\n' "${out[@]}" | sort -n | uniq
}
[[ "$gpus" =~ ^[0-9]+$ ]] || die "--gpus-per-node: '$gpus' is not a whole number"
is_count "$cpus" || die "--cpus-per-task: '$cpus' is not a positive whole number"
[[ "$study" =~ ^[A-Za-z0-9._-]*$ ]] || die "--study: use letters, digits, '.', '_' and '-' only"
strategies=("")  # (one study, with whatever --strategy the mlai_train flags give)
if [ -n "$strategies_list" ]; then
  IFS=, read -r -a strategies <<< "$strategies_list"
  [ ${#strategies[@]} -gt 0 ] || die "--strategies: empty list"
  for s in "${strategies[@]}"; do
    [[ "$s" =~ ^(ddp|zero[123]|hybrid_shard|fsdp|deepspeed_stage_[123])$ ]] ||
      die "--strategies: '$s' is not a strategy (ddp, zero1, zero2, zero3, hybrid_shard, fsdp, deepspeed_stage_1/2/3)"
  done
  [ "$(printf '%s\n' "${strategies[@]}" | sort | uniq -d)" = "" ] || die "--strategies: a strategy given twice"
fi

# (Command substitutions, not <(...): a die inside must end the script.)
tpn_sorted=$(parse_list --tasks-per-node "$tpn_list") || exit
mapfile -t tpns <<< "$tpn_sorted"
points=()  # "nodes tasks_per_node" each
if [ -n "$ranks_list" ]; then
  [ "$nodes_given" = 0 ] || die "give --nodes or --ranks, not both"
  [ ${#tpns[@]} = 1 ] || die "with --ranks, --tasks-per-node is one number (the ranks of a full node)"
  full=${tpns[0]}
  ranks_sorted=$(parse_list --ranks "$ranks_list") || exit
  while read -r r; do
    if [ "$r" -le "$full" ]; then
      points+=("1 $r")
    elif [ $((r % full)) = 0 ]; then
      points+=("$((r / full)) $full")
    else
      die "--ranks: $r ranks do not fill nodes of $full (--tasks-per-node)"
    fi
  done <<< "$ranks_sorted"
  sweep=ranks
else
  nodes_sorted=$(parse_list --nodes "$nodes_list") || exit
  mapfile -t node_counts <<< "$nodes_sorted"
  if [ ${#node_counts[@]} -gt 1 ] && [ ${#tpns[@]} -gt 1 ]; then
    die "sweep either --nodes or --tasks-per-node, not both"
  fi
  for n in "${node_counts[@]}"; do
    for t in "${tpns[@]}"; do points+=("$n $t"); done
  done
  if [ ${#tpns[@]} -gt 1 ]; then sweep=ranks; else sweep=nodes; fi
fi
for p in "${points[@]}"; do
  read -r n t <<< "$p"
  if [ "$gpus" -gt 0 ] && [ "$t" -gt "$gpus" ]; then
    die "$t ranks per node but --gpus-per-node $gpus: one rank per GPU (0 for CPU nodes)"
  fi
done

# ---- The training flags -------------------------------------------------------------------------
batch=64  # mlai_train's default --batch-size
rest=()   # the flags without --batch-size, which each point sets itself under --strong
i=0
while [ $i -lt ${#train_args[@]} ]; do
  a=${train_args[$i]}
  case "$a" in
    --log-dir | --log-dir=* | --experiment-name | --experiment-name=* | --resume | --resume=*)
      die "${a%%=*}: the study sets each run's log folder and experiment; do not pass it" ;;
    --fast-dev-run | --fast-dev-run=*)
      die "--fast-dev-run writes no metrics: use --epochs and --limit-train-batches for a short study" ;;
    --strategy | --strategy=*)
      [ -z "$strategies_list" ] || die "--strategy: --strategies sets each study's; do not pass it"
      rest+=("$a") ;;
    --batch-size=*) batch=${a#*=} ;;
    --batch-size)
      i=$((i + 1))
      [ $i -lt ${#train_args[@]} ] || die "--batch-size needs a value"
      batch=${train_args[$i]}
      ;;
    *) rest+=("$a") ;;
  esac
  i=$((i + 1))
done
is_count "$batch" || die "--batch-size: '$batch' is not a positive whole number"
if [ "$scaling" = strong ]; then
  for p in "${points[@]}"; do
    read -r n t <<< "$p"
    [ $((batch % (n * t))) = 0 ] ||
      die "--strong: the global --batch-size $batch does not split evenly over $((n * t)) ranks"
  done
fi

# ---- Paths --------------------------------------------------------------------------------------
[ -n "$study" ] || study=scaling-$(date +%Y%m%d-%H%M%S)
study_dir=$(realpath -m "${study_dir:-logs/$study}")
submit_dir=$PWD
train=$(realpath -m "$train")
if [ ! -x "$train" ]; then
  msg="no mlai_train at $train: build it, or pass --train PATH (or set MLAI_TRAIN)"
  if [ "$dry_run" = 1 ]; then echo "scaling.sh: warning: $msg" >&2; else die "$msg"; fi
fi

# The study being written: the whole study, or under --strategies one strategy's (use_strategy).
sub=$study sub_dir=$study_dir strategy_args=()
use_strategy() {  # use_strategy STRATEGY ("": no --strategies)
  if [ -z "$1" ]; then
    sub=$study sub_dir=$study_dir strategy_args=()
  else
    sub=$study-$1 sub_dir=$study_dir/$1 strategy_args=(--strategy "$1" --log-device-stats)
  fi
}

point_name() {  # point_name NODES RANKS
  if [ "$sweep" = nodes ]; then echo "$sub-n$1"; else echo "$sub-r$2"; fi
}

# ---- The job script of one point ----------------------------------------------------------------
job_script() {  # job_script NODES TASKS_PER_NODE
  local n=$1 t=$2 ranks=$(($1 * $2)) name per_rank opt
  name=$(point_name "$n" "$ranks")
  per_rank=$batch
  [ "$scaling" = strong ] && per_rank=$((batch / ranks))
  cat << EOF
#!/bin/bash
# Scaling study $sub, point $name: $n node(s) x $t rank(s) per node, batch $per_rank per rank
# ($scaling scaling). Written by slurm/scaling.sh on $(date '+%Y-%m-%d %H:%M'); to run this point
# again: sbatch $sub_dir/$name.sbatch
# The job inherits the environment of the shell that submits it (sbatch's default --export=ALL):
# load the modules the binary was built with before running slurm/scaling.sh.

# ---- Resources ----------------------------------------------------------------------------------
#SBATCH --job-name=$name
#SBATCH --nodes=$n
#SBATCH --ntasks-per-node=$t
EOF
  if [ "$gpus" -gt 0 ]; then
    echo "# One GPU per rank; each rank uses the GPU of its local rank."
    echo "#SBATCH --gpus-per-node=$t"
  fi
  echo "#SBATCH --cpus-per-task=$cpus"
  echo "#SBATCH --time=$time_limit"
  [ -n "$partition" ] && echo "#SBATCH --partition=$partition"
  if [ "$exclusive" = 1 ]; then
    echo "# Whole nodes: no other job's work distorts the timing (and points that would share a"
    echo "# node run one after another)."
    echo "#SBATCH --exclusive"
  fi
  for opt in "${extra[@]}"; do echo "#SBATCH $opt"; done
  cat << EOF
#SBATCH --output=$sub_dir/$name-%j.out
#SBATCH --chdir=$submit_dir

if [ -z "\${SLURM_JOB_ID:-}" ]; then
  echo "This is a Slurm batch script and this is not a Slurm job (no SLURM_JOB_ID)." >&2
  echo "Submit it: sbatch $sub_dir/$name.sbatch" >&2
  exit 1
fi
set -euo pipefail

# ---- Environment --------------------------------------------------------------------------------
# Threads of mlai's CPU kernels, matrix products included (its pool reads OMP_NUM_THREADS
# when MLAI_NUM_THREADS is unset; OpenBLAS itself runs single-threaded inside it), and of any
# OpenMP code: one rank's share of the cores, so the ranks of a node do not oversubscribe it.
export OMP_NUM_THREADS=\${SLURM_CPUS_PER_TASK:-1}
EOF
  if [ "$gpus" -gt 0 ]; then
    cat << 'EOF'
# NCCL (gradient allreduce between GPUs) prints warnings and errors only; INFO shows the chosen
# network, transports and topology when a multi-node point is slow or hangs at start.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Not set here; uncomment where NCCL picks a wrong network interface (a management or container
# network) or where InfiniBand is present but broken:
# export NCCL_SOCKET_IFNAME=ib0
# export NCCL_IB_DISABLE=1
EOF
  fi
  printf '\n# ---- Run ----------------------------------------------------------------------------------------\n'
  # shellcheck disable=SC2016  # expanded in the job, not here
  echo 'echo "job $SLURM_JOB_ID: $SLURM_NTASKS rank(s) on $SLURM_JOB_NUM_NODES node(s) ($SLURM_JOB_NODELIST)"'
  echo "# --mpi=pmix: Open MPI started directly by srun through PMIx. --cpus-per-task again: srun"
  echo "# 22.05 to 23.02 does not inherit it from sbatch."
  # shellcheck disable=SC2016
  printf 'srun --mpi=pmix --cpus-per-task="$SLURM_CPUS_PER_TASK" %q \\\n' "$train"
  printf '  --log-dir %q --experiment-name %q --batch-size %s' "$sub_dir" "$name" "$per_rank"
  [ ${#strategy_args[@]} -gt 0 ] && printf ' %q' "${strategy_args[@]}"
  [ ${#rest[@]} -gt 0 ] && printf ' %q' "${rest[@]}"
  printf '\n'
}

if [ "$dry_run" = 1 ]; then
  echo "# Study $study in $study_dir: $((${#points[@]} * ${#strategies[@]})) job(s), $scaling scaling (dry run: nothing submitted)"
  for s in "${strategies[@]}"; do
    use_strategy "$s"
    for p in "${points[@]}"; do
      read -r n t <<< "$p"
      printf '\n# ==== %s.sbatch ====\n' "$(point_name "$n" $((n * t)))"
      job_script "$n" "$t"
    done
  done
  exit 0
fi

# ---- Submit -------------------------------------------------------------------------------------
if ! command -v sbatch > /dev/null; then
  echo "scaling.sh: sbatch not found: this submits Slurm jobs, so run it where Slurm's commands" \
    "work (a login node; module load slurm at some sites), or try it on a local cluster:" \
    "eval \"\$(bash scripts/slurm-local.sh start)\". --dry-run prints the job scripts without Slurm." >&2
  exit 1
fi
# Every point's request is checked first (sbatch --test-only submits nothing), so a study with an
# impossible point (more nodes than the partition has) is not left half submitted.
for p in "${points[@]}"; do
  read -r n t <<< "$p"
  if ! answer=$(job_script "$n" "$t" | sbatch --test-only 2>&1); then
    echo "scaling.sh: Slurm refuses the point $(point_name "$n" $((n * t))) ($n node(s) x $t" \
      "rank(s)): ${answer##*error: }; nothing submitted" >&2
    exit 1
  fi
done

if [ "$scaling" = weak ]; then
  echo "weak scaling: --batch-size $batch per rank at every point; the global batch grows with the ranks"
else
  echo "strong scaling: global batch $batch at every point, split over the ranks"
fi

quoted() { [ $# = 0 ] || printf '%q ' "$@"; }
ids=()
sub_dirs=()  # each study's folder (one, or one per strategy)
for s in "${strategies[@]}"; do
  use_strategy "$s"
  sub_dirs+=("$sub_dir")
  mkdir -p "$sub_dir"
  jobs_tsv=$sub_dir/jobs.tsv
  if [ -s "$jobs_tsv" ]; then
    echo "study $sub exists: adding jobs to $jobs_tsv (the report uses each point's latest job)"
  else
    printf 'study\tname\tnodes\ttasks_per_node\tranks\tgpus_per_node\tbatch_per_rank\tglobal_batch\tscaling\tjob_id\tsubmitted\ttrain_args\n' > "$jobs_tsv"
  fi
  for p in "${points[@]}"; do
    read -r n t <<< "$p"
    ranks=$((n * t))
    name=$(point_name "$n" "$ranks")
    script=$sub_dir/$name.sbatch
    job_script "$n" "$t" > "$script"
    if ! answer=$(sbatch --parsable "$script" 2>&1); then
      echo "scaling.sh: sbatch $script failed: $answer" >&2
      [ ${#ids[@]} -gt 0 ] && echo "already submitted: ${ids[*]} (listed in jobs.tsv)" >&2
      exit 1
    fi
    id=${answer##*$'\n'}  # the last line: the id (before it, any warnings)
    id=${id%%;*}          # without ";cluster"
    ids+=("$id")
    per_rank=$batch
    [ "$scaling" = strong ] && per_rank=$((batch / ranks))
    g=0
    [ "$gpus" -gt 0 ] && g=$t
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sub" "$name" "$n" "$t" "$ranks" "$g" \
      "$per_rank" $((per_rank * ranks)) "$scaling" "$id" "$(date -Iseconds)" \
      "$(quoted "${strategy_args[@]}" "${rest[@]}")" >> "$jobs_tsv"
    printf '  %-28s %2s node(s) x %s rank(s)   job %s\n' "$name" "$n" "$t" "$id"
  done
done
ids_csv=$(IFS=,; echo "${ids[*]}")
report_py=$(realpath -m --relative-to="$submit_dir" "$(dirname "$0")")/scaling_report.py
if [ ${#sub_dirs[@]} = 1 ]; then
  report=(python3 "$report_py" "$study_dir")
  echo "study $study: ${#ids[@]} job(s) in $jobs_tsv; job outputs: $study_dir/<point>-<job id>.out"
else  # one report per strategy, then all of them side by side
  report=(python3 "$report_py" "${sub_dirs[@]}" --out "$study_dir")
  echo "study $study: ${#ids[@]} job(s), one study per strategy in $study_dir/<strategy>" \
    "(jobs.tsv, <point>-<job id>.out)"
fi

if [ "$wait_jobs" = 0 ]; then
  echo "watch:   squeue -j $ids_csv"
  echo "collect: ${report[*]}    (when they have ended)"
  exit 0
fi

# ---- Wait ---------------------------------------------------------------------------------------
trap 'echo; echo "stopped waiting; the jobs go on (squeue -j $ids_csv). Later: ${report[*]}"; exit 130' INT
echo "waiting for jobs $ids_csv (Ctrl-C stops waiting, not the jobs)"
delay=2
while :; do
  # Jobs that have ended leave squeue's default listing, and are unknown once purged. Any other
  # error (the controller busy or restarting) is retried.
  if left=$(squeue -h -j "$ids_csv" -o %i 2>&1); then
    [ -z "$left" ] && break
  else
    case "$left" in *"Invalid job id"*) break ;; esac
  fi
  sleep "$delay"
  [ "$delay" -lt 10 ] && delay=$((delay + 2))
done

failed=0
for d in "${sub_dirs[@]}"; do
  while IFS=$'\t' read -r name id; do
    [[ " ${ids[*]} " == *" $id "* ]] || continue  # (this run's jobs only)
    if grep -q '^test,' "$d/$name/version_$id/metrics.csv" 2> /dev/null; then
      echo "  $name (job $id): finished"
    else
      failed=1
      echo "  $name (job $id): did not finish; the end of $d/$name-$id.out:"
      tail -n 5 "$d/$name-$id.out" 2> /dev/null | sed 's/^/    /' || echo "    (no output)"
    fi
  done < <(awk -F'\t' 'NR > 1 { print $2 "\t" $10 }' "$d/jobs.tsv")
done
rc=0
if [ ${#sub_dirs[@]} -gt 1 ]; then  # each strategy's own scaling.md first
  for d in "${sub_dirs[@]}"; do python3 "$report_py" "$d" > /dev/null || rc=$?; done
fi
"${report[@]}" || rc=$?
[ "$failed" = 0 ] || { echo "scaling.sh: some points did not finish" >&2; exit 1; }
exit "$rc"
