// DType names and sizes.
#include "tensor/dtype.h"

namespace mlai::tensor {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kFloat64: return 8;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kUInt8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUInt8: return "uint8";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "float32" || n == "fp32" || n == "float") return DType::kFloat32;
  if (n == "float16" || n == "fp16" || n == "half") return DType::kFloat16;
  if (n == "bfloat16" || n == "bf16") return DType::kBFloat16;
  if (n == "float64" || n == "fp64" || n == "double") return DType::kFloat64;
  if (n == "int32") return DType::kInt32;
  if (n == "int64") return DType::kInt64;
  if (n == "uint8") return DType::kUInt8;
  throw std::invalid_argument("unknown dtype '" + n +
                              "' (expected float32, float16, bfloat16, float64, int32, int64 or "
                              "uint8)");
}

void throw_bad_dtype(const char* op, DType dt) {
  throw std::invalid_argument(std::string(op) + ": dtype " + dtype_name(dt) + " is not supported");
}

}  // namespace mlai::tensor
