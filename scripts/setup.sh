#!/usr/bin/env bash
# Installs what building mlai needs on Debian/Ubuntu, and only what is missing (safe to re-run).
# Where apt-get cannot be used (no apt, or not root and no sudo: an HPC login node) it installs
# nothing: it checks what CMake will look for and prints the `module load` lines to try.
#
#   bash scripts/setup.sh            install the missing Debian packages (apt-get, with sudo if needed)
#   bash scripts/setup.sh --check    only report what is there and what is missing
#   bash scripts/setup.sh --no-data  leave out dataset-fashion-mnist (the default data set)
#
# The CUDA toolkit (nvcc, cuBLAS, cuDNN, NCCL) is not installed here: it comes from NVIDIA's
# repository at /usr/local/cuda or from a module. Without it the build is CPU-only.
# Exit status: 0 when everything essential is there (or was installed), 1 otherwise.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

check_only=0
with_data=1
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --no-data) with_data=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

# Debian packages; the last one is data, not needed to build or test.
packages=(build-essential cmake pkg-config git libopenblas-dev libopenmpi-dev openmpi-bin
  libhdf5-dev zlib1g-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libyaml-cpp-dev
  libpng-dev libturbojpeg0-dev libgtest-dev libbenchmark-dev python3)
data_package=dataset-fashion-mnist
[ "$with_data" = 1 ] && packages+=("$data_package")

say() { printf '%s\n' "$*"; }

report_cuda() {
  local nvcc
  nvcc=$(command -v nvcc || true)
  [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
  if [ -n "$nvcc" ]; then
    say "CUDA:  $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1) ($nvcc): CMake builds the CUDA backend by default"
    # CMake also needs cuDNN and NCCL for it; look where it looks.
    local root h lib dirs found d
    root=$(cd "$(dirname "$nvcc")/.." && pwd)
    for h in cudnn.h nccl.h; do
      found="" lib=${h%.h}
      dirs="$root/include /usr/include /usr/local/include ${CUDNN_ROOT:+$CUDNN_ROOT/include} ${NCCL_ROOT:+$NCCL_ROOT/include} ${CPATH:+${CPATH//:/ }}"
      for d in $dirs; do [ -f "$d/$h" ] && { found=$d/$h; break; }; done
      if [ -n "$found" ]; then
        say "       ok       $found"
      else
        say "       MISSING  $h: install it (cudnn9-cuda-13 / libnccl-dev from NVIDIA's repository),"
        say "                set ${lib^^}_ROOT to where it is, or configure with -DMLAI_CUDA=OFF"
      fi
    done
  else
    say "CUDA:  no nvcc (not in PATH, not in /usr/local/cuda). This script does not install the CUDA"
    say "       toolkit; the build is CPU-only (-DMLAI_CUDA=OFF), which works. For GPUs install"
    say "       NVIDIA's cuda-toolkit, cudnn and libnccl-dev, or 'module load cuda'."
  fi
}

# ---- Without apt: check the toolchain the way CMake will see it ---------------------------------
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

check_toolchain() {
  local missing=() optional=() modules=() cmake_ok=0 name w1 w2 module d
  say "Checking the toolchain for a build without root (modules or your own prefixes):"
  if command -v cmake > /dev/null; then
    local v
    v=$(cmake --version | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')
    if version_ge "$v" 3.25; then
      say "  ok       cmake $v"; cmake_ok=1
    else
      say "  MISSING  cmake >= 3.25 (found $v)"; missing+=(cmake); modules+=(cmake)
    fi
  else
    say "  MISSING  cmake >= 3.25"; missing+=(cmake); modules+=(cmake)
  fi
  local cxx=${CXX:-}
  [ -z "$cxx" ] && cxx=$(command -v g++ || command -v c++ || command -v clang++ || true)
  tmp=$(mktemp -d)  # global: the EXIT trap removes it
  trap 'rm -rf "$tmp"' EXIT
  printf '#include <concepts>\n#include <span>\ntemplate <std::integral T> T twice(T x) { return 2 * x; }\nint main() { int v[2] = {1, 2}; std::span<int> s(v); return twice(static_cast<int>(s.size())) - 4; }\n' > "$tmp/c20.cpp"
  if [ -n "$cxx" ] && "$cxx" -std=c++20 "$tmp/c20.cpp" -o "$tmp/c20" 2> /dev/null && "$tmp/c20"; then
    say "  ok       C++20 compiler ($cxx)"
  else
    say "  MISSING  a C++20 compiler (GCC >= 11 or Clang >= 14; tried '${cxx:-none}')"
    missing+=(compiler); modules+=(gcc)
  fi
  if [ "$cmake_ok" = 0 ]; then  # else CMake's own search decides (below)
    local lib_dirs found_blas=""
    lib_dirs="${LIBRARY_PATH:-}:${LD_LIBRARY_PATH:-}:${OPENBLAS_ROOT:+$OPENBLAS_ROOT/lib}"
    for d in ${lib_dirs//:/ }; do
      [ -e "$d/libopenblas.so" ] && { found_blas=$d/libopenblas.so; break; }
    done
    [ -z "$found_blas" ] && found_blas=$(/sbin/ldconfig -p 2> /dev/null | awk '/libopenblas\.so/ { print $NF; exit }')
    if [ -n "$found_blas" ]; then
      say "  ok       OpenBLAS ($found_blas)"
    else
      say "  MISSING  OpenBLAS (libopenblas.so)"; missing+=(OpenBLAS); modules+=(openblas)
    fi
  fi
  # MPI and HDF5 may come without wrappers in PATH (Cray: CC); then CMake's search decides.
  local tool
  for tool in MPI:mpicxx:mpic++:openmpi HDF5:h5cc:h5pcc:hdf5; do
    IFS=: read -r name w1 w2 module <<< "$tool"
    if command -v "$w1" > /dev/null || command -v "$w2" > /dev/null; then
      say "  ok       $name wrapper ($(command -v "$w1" || command -v "$w2"))"
    elif [ "$cmake_ok" = 1 ]; then
      say "  note     no $w1 in PATH: CMake's own search for $name decides (below)"
    else
      say "  MISSING  $name ($w1 not in PATH)"; missing+=("$name"); modules+=("$module")
    fi
  done

  if [ "$cmake_ok" = 1 ]; then
    # Ask CMake itself, with the same find_package calls and CMAKE_PREFIX_PATH as the real build.
    cat > "$tmp/CMakeLists.txt" << 'EOF'
cmake_minimum_required(VERSION 3.25)
project(mlai_probe LANGUAGES C CXX)
macro(probe name found)
  if(${found})
    message(STATUS "probe:ok:${name}")
  else()
    message(STATUS "probe:missing:${name}")
  endif()
endmacro()
find_package(OpenBLAS CONFIG QUIET)
find_library(OPENBLAS_LIB NAMES openblas HINTS ${OpenBLAS_LIBRARY_DIRS})
find_path(CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas HINTS ${OpenBLAS_INCLUDE_DIRS})
if(OPENBLAS_LIB AND CBLAS_INCLUDE)
  set(OPENBLAS_OK TRUE)
endif()
probe(OpenBLAS OPENBLAS_OK)
find_package(MPI COMPONENTS C CXX QUIET)
probe(MPI MPI_CXX_FOUND)
find_package(HDF5 COMPONENTS C QUIET)
probe(HDF5 HDF5_FOUND)
find_package(ZLIB QUIET)
probe(zlib ZLIB_FOUND)
find_package(PNG QUIET)
probe(libpng PNG_FOUND)
find_library(TURBOJPEG_LIB turbojpeg)
find_path(TURBOJPEG_INCLUDE turbojpeg.h)
if(TURBOJPEG_LIB AND TURBOJPEG_INCLUDE)
  set(TURBOJPEG_OK TRUE)
endif()
probe(turbojpeg TURBOJPEG_OK)
foreach(pkg CLI11 nlohmann_json spdlog yaml-cpp benchmark)
  find_package(${pkg} CONFIG QUIET)
  probe(${pkg} ${pkg}_FOUND)
endforeach()
find_package(GTest QUIET)
probe(GTest GTest_FOUND)
EOF
    local out state
    out=$(cmake -S "$tmp" -B "$tmp/build" 2>&1 || true)
    if ! grep -q '^-- probe:' <<< "$out"; then
      say "  MISSING  CMake could not configure a test project (compilers?):"
      printf '%s\n' "$out" | tail -n 5 | sed 's/^/           /'
      missing+=(cmake-configure)
    fi
    while IFS=: read -r _ state name; do
      case "$name:$state" in
        *:ok) say "  ok       $name (CMake finds it)" ;;
        GTest:missing | benchmark:missing)
          say "  optional $name not found: configure with -DMLAI_BUILD_$([ "$name" = GTest ] && echo TESTS || echo BENCH)=OFF, or install it"
          optional+=("$name") ;;
        *:missing)
          say "  MISSING  $name (CMake cannot find it)"; missing+=("$name")
          case "$name" in
            OpenBLAS) modules+=(openblas) ;; MPI) modules+=(openmpi) ;; HDF5) modules+=(hdf5) ;;
            zlib) modules+=(zlib) ;; libpng) modules+=(libpng) ;;
            turbojpeg) modules+=(libjpeg-turbo) ;;
          esac ;;
      esac
    done < <(printf '%s\n' "$out" | sed -n 's/^-- probe:/probe:/p')
  fi
  report_cuda
  say ""
  say "Typical on a cluster:  module load cmake gcc openmpi hdf5 openblas cuda"
  say "('module avail' lists your site's names; a package installed under a prefix of your own"
  say " is found with: export CMAKE_PREFIX_PATH=\$HOME/opt/<pkg>:\$CMAKE_PREFIX_PATH)"
  if [ ${#missing[@]} -gt 0 ]; then
    say ""
    say "Missing: ${missing[*]}"
    [ ${#modules[@]} -gt 0 ] && say "Try:     module load $(printf '%s\n' "${modules[@]}" | awk '!seen[$0]++' | paste -sd' ')"
    case " ${missing[*]} " in
      *" CLI11 "* | *" nlohmann_json "* | *" spdlog "* | *" yaml-cpp "*)
        say "CLI11, nlohmann-json, spdlog and yaml-cpp are rarely modules: 'spack install cli11 nlohmann-json spdlog yaml-cpp'"
        say "(or build them into a prefix of your own) and add that prefix to CMAKE_PREFIX_PATH." ;;
    esac
    return 1
  fi
  say "Everything essential is there${optional[0]:+ (not found, optional: ${optional[*]})}."
  return 0
}

# ---- With dpkg: which packages are missing ----------------------------------------------------
installed() { dpkg -s "$1" 2> /dev/null | grep -q '^Status: install ok installed'; }

if ! command -v dpkg > /dev/null || ! command -v apt-get > /dev/null; then
  say "setup.sh: no apt-get/dpkg here (not Debian/Ubuntu): nothing is installed."
  check_toolchain
  exit $?
fi

missing=()
for p in "${packages[@]}"; do
  if installed "$p"; then
    say "  ok       $p"
  else
    say "  missing  $p"
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  say "All ${#packages[@]} packages are installed."
  report_cuda
  exit 0
fi

essential_missing=0
for p in "${missing[@]}"; do [ "$p" != "$data_package" ] && essential_missing=1; done

if [ "$check_only" = 1 ]; then
  say "Missing: ${missing[*]}"
  say "Install: bash scripts/setup.sh   (or: apt-get install ${missing[*]})"
  report_cuda
  exit "$essential_missing"
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo > /dev/null && { sudo -n true 2> /dev/null || { [ -t 0 ] && sudo -v; }; }; then
    sudo=(sudo)
  else
    say "setup.sh: not root and no usable sudo: cannot install ${missing[*]}."
    say "Ask an administrator to run: apt-get install ${missing[*]}"
    say "or use your site's modules:"
    check_toolchain
    exit $?
  fi
fi

apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
say "Installing: ${missing[*]}"
"${apt[@]}" update
# The data set is in Debian (and Ubuntu universe); where no mirror has it, go on without it.
if [[ " ${missing[*]} " == *" $data_package "* ]] &&
  ! apt-cache show "$data_package" > /dev/null 2>&1; then
  say "setup.sh: $data_package is not available from your apt sources; skipping it"
  say "          (download the four Fashion-MNIST IDX .gz files yourself and point mlai_train at them)."
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | grep -vx "$data_package")
fi
if [ ${#missing[@]} -gt 0 ]; then
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
fi
say "Done."
report_cuda
