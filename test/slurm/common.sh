# Sourced by the Slurm tests (srun_test.sh, scaling_test.sh, sweep_test.sh):
#   test_setup NAME "$@"   the mlai_train argument (-> $train), $repo, a scratch folder $work
#                          (removed at exit unless a check failed), failed=0
#   fail MESSAGE           record a failed check (the test goes on, and exits 1 at its end)
#   skip MESSAGE           exit 77 (ctest's skip), or 1 under MLAI_REQUIRE_SLURM=1 (CI)
#   require_cluster        skip unless Slurm's commands exist and SLURM_CONF's cluster is up
#   finish_failed LOG DIR  after failed checks: LOG and the jobs' .out files in DIR, exit 1
# shellcheck shell=bash

skip() {
  if [ "${MLAI_REQUIRE_SLURM:-0}" = 1 ]; then echo "FAIL (MLAI_REQUIRE_SLURM=1): $*"; exit 1; fi
  echo "SKIP: $*"
  exit 77
}
fail() { echo "FAIL: $*"; failed=1; }

test_setup() {  # test_setup NAME MLAI_TRAIN
  [ $# -eq 2 ] || { echo "usage: $0 path/to/mlai_train" >&2; exit 2; }
  train=$(realpath "$2")
  [ -x "$train" ] || { echo "not an executable: $2" >&2; exit 2; }
  # shellcheck disable=SC2034  # (for the sourcing test)
  repo=$(realpath "$(dirname "${BASH_SOURCE[0]}")/../..")
  work=$(mktemp -d "${TMPDIR:-/tmp}/mlai-$1-test.XXXXXX")
  failed=0
  trap 'if [ "$failed" = 0 ]; then rm -rf "$work"; else echo "kept $work"; fi' EXIT
}

require_cluster() {
  if ! command -v sinfo > /dev/null || ! command -v sbatch > /dev/null; then
    skip "no Slurm client commands (sinfo, sbatch); start a local cluster with scripts/slurm-local.sh"
  fi
  [ -n "${SLURM_CONF:-}" ] ||
    skip "SLURM_CONF is not set; start a local cluster: eval \"\$(bash scripts/slurm-local.sh start)\""
  [ -f "$SLURM_CONF" ] || skip "SLURM_CONF=$SLURM_CONF does not exist"
  local states
  states=$(timeout 10 sinfo -h -o %T 2> /dev/null || true)
  grep -qE '^(idle|mixed|allocated)' <<< "$states" ||
    skip "the cluster of SLURM_CONF=$SLURM_CONF is not up (sinfo: ${states:-no answer})"
}

finish_failed() {  # finish_failed LOG DIR: show what the jobs said, then fail the test
  echo "---- $(basename "$1") ----"
  cat "$1"
  local out
  for out in "$2"/*.out; do
    [ -f "$out" ] || continue
    echo "---- $out ----"
    tail -n 20 "$out"
  done
  exit 1
}
