// Library handles in a build without CUDA: every request is an error (the CUDA build defines
// these in handles_cuda.cpp instead).
#include "tensor/handles.h"

#ifndef MLAI_WITH_CUDA
#include <stdexcept>
#include <string>

namespace mlai::tensor {

kernels::CublasHandle cublas_handle(int device) {
  throw std::runtime_error("cublas_handle(" + std::to_string(device) +
                           "): mlai was built without CUDA (-DMLAI_CUDA=OFF)");
}

CudnnHandle cudnn_handle(int device) {
  throw std::runtime_error("cudnn_handle(" + std::to_string(device) +
                           "): mlai was built without CUDA (-DMLAI_CUDA=OFF)");
}

}  // namespace mlai::tensor
#endif
