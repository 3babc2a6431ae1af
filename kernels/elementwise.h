// Elementwise kernels: add, sub, mul, div, scale, axpy, relu and relu6 and their backwards,
// fused bias(+relu).
// Each CUDA entry point (namespace cuda) has a CPU twin (namespace cpu) with the same arguments
// but the stream. T is float, double, Half or BFloat16; arithmetic is done in acc_t<T>.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

#define MLAI_ELEMENTWISE_DECLS(...)                                                         \
  template <class T>                                                                        \
  void add(const T* a, const T* b, T* out, int64_t n __VA_ARGS__);                          \
  template <class T>                                                                        \
  void sub(const T* a, const T* b, T* out, int64_t n __VA_ARGS__);                          \
  template <class T>                                                                        \
  void mul(const T* a, const T* b, T* out, int64_t n __VA_ARGS__);                          \
  template <class T>                                                                        \
  void div(const T* a, const T* b, T* out, int64_t n __VA_ARGS__);                          \
  /* out = alpha * x */                                                                     \
  template <class T>                                                                        \
  void scale(const T* x, double alpha, T* out, int64_t n __VA_ARGS__);                      \
  /* y += alpha * x */                                                                      \
  template <class T>                                                                        \
  void axpy(double alpha, const T* x, T* y, int64_t n __VA_ARGS__);                         \
  template <class T>                                                                        \
  void relu(const T* x, T* y, int64_t n __VA_ARGS__);                                       \
  /* dx = dy where x > 0, else 0 (x may be the relu output: same mask) */                   \
  template <class T>                                                                        \
  void relu_backward(const T* dy, const T* x, T* dx, int64_t n __VA_ARGS__);                \
  /* y = min(max(x, 0), 6) (torch's ReLU6, MobileNet's activation); nan gives 0 */          \
  template <class T>                                                                        \
  void relu6(const T* x, T* y, int64_t n __VA_ARGS__);                                      \
  /* dx = dy where 0 < x < 6, else 0, as torch's hardtanh_backward (x may be the output) */ \
  template <class T>                                                                        \
  void relu6_backward(const T* dy, const T* x, T* dx, int64_t n __VA_ARGS__);               \
  /* y[r, c] = x[r, c] + bias[c], then relu when apply_relu; x is rows x cols row-major */  \
  template <class T>                                                                        \
  void bias_act(const T* x, const T* bias, T* y, int64_t rows, int64_t cols,                \
                bool apply_relu __VA_ARGS__);

namespace cpu {
MLAI_ELEMENTWISE_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_ELEMENTWISE_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_ELEMENTWISE_DECLS

}  // namespace mlai::kernels
