// Element types and the dispatch macros that turn a runtime DType into a C++ type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common.h"

namespace mlai::tensor {

using kernels::BFloat16;
using kernels::Half;

enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kFloat64, kInt32, kInt64, kUInt8 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
DType dtype_from_name(const std::string& name);  // "float32", "fp16", "bf16", ...
inline bool is_floating(DType dt) {
  return dt == DType::kFloat32 || dt == DType::kFloat16 || dt == DType::kBFloat16 ||
         dt == DType::kFloat64;
}

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::kFloat32; }
template <> constexpr DType dtype_of<Half>() { return DType::kFloat16; }
template <> constexpr DType dtype_of<BFloat16>() { return DType::kBFloat16; }
template <> constexpr DType dtype_of<double>() { return DType::kFloat64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::kInt32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::kInt64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::kUInt8; }

[[noreturn]] void throw_bad_dtype(const char* op, DType dt);

// MLAI_DISPATCH_FLOAT(dt, "op", { ... scalar_t ... }) runs the block with scalar_t bound to
// the C++ type of a floating dtype; other dtypes throw naming the op.
#define MLAI_DISPATCH_CASE(ENUM, TYPE, ...) \
  case ::mlai::tensor::DType::ENUM: {       \
    using scalar_t = TYPE;                  \
    __VA_ARGS__;                            \
    break;                                  \
  }
#define MLAI_DISPATCH_FLOAT(DT, OP, ...)                                  \
  switch (DT) {                                                           \
    MLAI_DISPATCH_CASE(kFloat32, float, __VA_ARGS__)                      \
    MLAI_DISPATCH_CASE(kFloat64, double, __VA_ARGS__)                     \
    MLAI_DISPATCH_CASE(kFloat16, ::mlai::kernels::Half, __VA_ARGS__)      \
    MLAI_DISPATCH_CASE(kBFloat16, ::mlai::kernels::BFloat16, __VA_ARGS__) \
    default:                                                              \
      ::mlai::tensor::throw_bad_dtype(OP, DT);                            \
  }
// The storage dtypes of training (mixed precision included): float32, float16, bfloat16.
#define MLAI_DISPATCH_TRAINING(DT, OP, ...)                                  \
  switch (DT) {                                                           \
    MLAI_DISPATCH_CASE(kFloat32, float, __VA_ARGS__)                      \
    MLAI_DISPATCH_CASE(kFloat16, ::mlai::kernels::Half, __VA_ARGS__)      \
    MLAI_DISPATCH_CASE(kBFloat16, ::mlai::kernels::BFloat16, __VA_ARGS__) \
    default:                                                              \
      ::mlai::tensor::throw_bad_dtype(OP, DT);                            \
  }
#define MLAI_DISPATCH_ALL(DT, OP, ...)                  \
  switch (DT) {                                         \
    MLAI_DISPATCH_CASE(kFloat32, float, __VA_ARGS__)    \
    MLAI_DISPATCH_CASE(kFloat64, double, __VA_ARGS__)   \
    MLAI_DISPATCH_CASE(kFloat16, ::mlai::kernels::Half, __VA_ARGS__) \
    MLAI_DISPATCH_CASE(kBFloat16, ::mlai::kernels::BFloat16, __VA_ARGS__) \
    MLAI_DISPATCH_CASE(kInt32, int32_t, __VA_ARGS__)    \
    MLAI_DISPATCH_CASE(kInt64, int64_t, __VA_ARGS__)    \
    MLAI_DISPATCH_CASE(kUInt8, uint8_t, __VA_ARGS__)    \
    default:                                            \
      ::mlai::tensor::throw_bad_dtype(OP, DT);          \
  }

}  // namespace mlai::tensor
