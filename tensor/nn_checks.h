// Internal to tensor/: the validation and dispatch helpers shared by the layer ops
// (nn_ops.cpp: convolution and pooling; batchnorm.cpp: batch norm, plain and fused;
// transformer_ops.cpp: layer norm, attention and the token ops).
#pragma once

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace mlai::tensor::detail {

// The cuDNN call in a CUDA build. A CPU-only build cannot make CUDA tensors, but should one
// arrive anyway it gets a clear error, never a silent copy to the CPU.
#ifdef MLAI_WITH_CUDA
#define MLAI_CUDNN_CALL(OP, CALL) cudnn::CALL
#else
#define MLAI_CUDNN_CALL(OP, CALL) \
  throw std::runtime_error(std::string(OP) + ": mlai was built without CUDA (-DMLAI_CUDA=OFF)")
#endif

// float32 or float64, on the CPU.
#define MLAI_DISPATCH_F32_F64(DT, OP, ...)            \
  switch (DT) {                                       \
    MLAI_DISPATCH_CASE(kFloat32, float, __VA_ARGS__)  \
    MLAI_DISPATCH_CASE(kFloat64, double, __VA_ARGS__) \
    default:                                          \
      throw_bad_dtype(OP, DT);                        \
  }

inline bool is_half(DType dt) { return dt == DType::kFloat16 || dt == DType::kBFloat16; }
// A normalisation's per-channel parameters and statistics (batch norm, layer norm): float32
// for half/bf16 x (cuDNN wants them so, and mixed precision keeps them in fp32), x's dtype
// for float32/float64 x.
inline DType param_dtype(DType x) { return is_half(x) ? DType::kFloat32 : x; }
inline Tensor to_f32(const Tensor& t) { return t.defined() ? cast(t, DType::kFloat32) : Tensor(); }

// Every defined tensor on the device of the first one.
inline void check_devices(const char* op, std::initializer_list<const Tensor*> ts) {
  const Device d = (*ts.begin())->device();
  for (const Tensor* t : ts)
    if (t->defined() && t->device() != d)
      throw std::invalid_argument(std::string(op) + ": tensors on different devices (" + d.str() +
                                  " and " + t->device().str() + ")");
}

inline void check_dtype(const char* op, const char* what, const Tensor& t, DType want) {
  if (t.defined() && t.dtype() != want)
    throw std::invalid_argument(std::string(op) + ": " + what + " is " + dtype_name(t.dtype()) +
                                ", expected " + dtype_name(want));
}

inline void check_shape(const char* op, const char* what, const Tensor& t, const Shape& want) {
  if (t.shape() != want)
    throw std::invalid_argument(std::string(op) + ": " + what + " is " + shape_str(t.shape()) +
                                ", expected " + shape_str(want));
}

inline void check_floating(const char* op, const Tensor& x) {
  if (!is_floating(x.dtype())) throw_bad_dtype(op, x.dtype());
}

}  // namespace mlai::tensor::detail
