# Finds every dependency with find_package/find_library and fails with a message naming the
# missing package and the Debian package that provides it (scripts/setup.sh installs them all).
# Produces two interface targets: mlai::deps (always) and mlai::cuda_deps (MLAI_CUDA only).

function(mlai_require found what debian_pkg)
  if(NOT ${found})
    message(FATAL_ERROR "mlai: ${what} not found. On Debian/Ubuntu: apt-get install ${debian_pkg} "
                        "(or run scripts/setup.sh); on an HPC system load its module "
                        "(e.g. 'module load ${what}') or set CMAKE_PREFIX_PATH.")
  endif()
endfunction()

find_package(Threads REQUIRED)

# OpenBLAS: CPU GEMM (cblas interface).
find_package(OpenBLAS CONFIG QUIET)
find_path(MLAI_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas HINTS ${OpenBLAS_INCLUDE_DIRS})
find_library(MLAI_OPENBLAS_LIB NAMES openblas HINTS ${OpenBLAS_LIBRARY_DIRS})
mlai_require(MLAI_OPENBLAS_LIB "OpenBLAS" "libopenblas-dev")
mlai_require(MLAI_CBLAS_INCLUDE "cblas.h (OpenBLAS)" "libopenblas-dev")

find_package(MPI COMPONENTS C CXX QUIET)
mlai_require(MPI_CXX_FOUND "MPI (Open MPI)" "libopenmpi-dev openmpi-bin")

find_package(HDF5 COMPONENTS C QUIET)
mlai_require(HDF5_FOUND "HDF5 (C library)" "libhdf5-dev")

find_package(ZLIB QUIET)
mlai_require(ZLIB_FOUND "zlib" "zlib1g-dev")

# Image decoding for mlai_convert --from folder: libpng and libjpeg-turbo's TurboJPEG.
find_package(PNG QUIET)
mlai_require(PNG_FOUND "libpng" "libpng-dev")
find_path(MLAI_TURBOJPEG_INCLUDE turbojpeg.h)
find_library(MLAI_TURBOJPEG_LIB turbojpeg)
mlai_require(MLAI_TURBOJPEG_LIB "TurboJPEG (libjpeg-turbo)" "libturbojpeg0-dev")
mlai_require(MLAI_TURBOJPEG_INCLUDE "turbojpeg.h (libjpeg-turbo)" "libturbojpeg0-dev")

find_package(CLI11 CONFIG QUIET)
mlai_require(CLI11_FOUND "CLI11" "libcli11-dev")
find_package(nlohmann_json CONFIG QUIET)
mlai_require(nlohmann_json_FOUND "nlohmann-json" "nlohmann-json3-dev")
find_package(spdlog CONFIG QUIET)
mlai_require(spdlog_FOUND "spdlog" "libspdlog-dev")
find_package(yaml-cpp CONFIG QUIET)
mlai_require(yaml-cpp_FOUND "yaml-cpp" "libyaml-cpp-dev")

if(MLAI_BUILD_TESTS)
  find_package(GTest QUIET)
  mlai_require(GTest_FOUND "GoogleTest" "libgtest-dev")
endif()
if(MLAI_BUILD_BENCH)
  find_package(benchmark CONFIG QUIET)
  mlai_require(benchmark_FOUND "Google Benchmark" "libbenchmark-dev")
endif()

add_library(mlai_deps INTERFACE)
add_library(mlai::deps ALIAS mlai_deps)
target_include_directories(mlai_deps INTERFACE ${MLAI_CBLAS_INCLUDE} ${HDF5_INCLUDE_DIRS}
                           ${MLAI_TURBOJPEG_INCLUDE})
target_link_libraries(mlai_deps INTERFACE ${MLAI_OPENBLAS_LIB} MPI::MPI_CXX ${HDF5_C_LIBRARIES}
                      ZLIB::ZLIB CLI11::CLI11 nlohmann_json::nlohmann_json spdlog::spdlog
                      ${YAML_CPP_LIBRARIES} PNG::PNG ${MLAI_TURBOJPEG_LIB}
                      Threads::Threads)
target_compile_definitions(mlai_deps INTERFACE ${HDF5_C_DEFINITIONS})

if(MLAI_CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(_cuda_hints ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib64 /usr/local/cuda/lib64)
  find_library(MLAI_CUDNN_LIB cudnn HINTS ${_cuda_hints} ENV CUDNN_ROOT PATH_SUFFIXES lib lib64)
  find_path(MLAI_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT
            PATH_SUFFIXES include)
  mlai_require(MLAI_CUDNN_LIB "cuDNN 9" "cudnn9-cuda-13 (NVIDIA's repository)")
  mlai_require(MLAI_CUDNN_INCLUDE "cudnn.h (cuDNN 9)" "cudnn9-cuda-13 (NVIDIA's repository)")
  find_library(MLAI_NCCL_LIB nccl HINTS ${_cuda_hints} ENV NCCL_ROOT PATH_SUFFIXES lib lib64)
  find_path(MLAI_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_ROOT
            PATH_SUFFIXES include)
  mlai_require(MLAI_NCCL_LIB "NCCL 2" "libnccl-dev (NVIDIA's repository)")
  mlai_require(MLAI_NCCL_INCLUDE "nccl.h (NCCL 2)" "libnccl-dev (NVIDIA's repository)")
  mlai_require(CUDAToolkit_FOUND "CUDA toolkit" "cuda-toolkit (NVIDIA's repository)")
  if(NOT TARGET CUDA::cublas)
    mlai_require(FALSE "cuBLAS" "libcublas-dev (NVIDIA's repository)")
  endif()

  add_library(mlai_cuda_deps INTERFACE)
  add_library(mlai::cuda_deps ALIAS mlai_cuda_deps)
  target_include_directories(mlai_cuda_deps INTERFACE ${MLAI_CUDNN_INCLUDE} ${MLAI_NCCL_INCLUDE})
  target_link_libraries(mlai_cuda_deps INTERFACE CUDA::cudart CUDA::cublas CUDA::cublasLt
                        ${MLAI_CUDNN_LIB} ${MLAI_NCCL_LIB})
endif()
