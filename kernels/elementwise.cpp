// CPU twins of kernels/elementwise.cu: plain loops the compiler vectorizes, arithmetic in
// acc_t<T> so fp16/bf16 storage behaves as on the GPU, spread over the kernel threads
// (kernels/parallel.h) in blocks.
#include "kernels/elementwise.h"

#include <algorithm>

#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

// Each op is a plain loop over [0, n) (its `*_loop`), run on blocks of kElementGrain elements
// by parallel_for: the loop the compiler vectorizes stays as it was, with offset pointers.
namespace {
template <class T, class F>
void binary_loop(const T* a, const T* b, T* out, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) out[i] = from_acc<T>(f(to_acc(a[i]), to_acc(b[i])));
}
template <class T, class F>
void binary(const T* a, const T* b, T* out, int64_t n, F f) {
  parallel_for(n, kElementGrain,
               [=](int64_t i, int64_t e) { binary_loop(a + i, b + i, out + i, e - i, f); });
}

template <class T>
void scale_loop(const T* x, acc_t<T> a, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = from_acc<T>(a * to_acc(x[i]));
}
template <class T>
void axpy_loop(acc_t<T> a, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = from_acc<T>(to_acc(y[i]) + a * to_acc(x[i]));
}
template <class T>
void relu_loop(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const auto v = to_acc(x[i]);
    y[i] = from_acc<T>(v > 0 ? v : 0);
  }
}
template <class T>
void relu_backward_loop(const T* dy, const T* x, T* dx, int64_t n) {
  // dy loaded unconditionally, then selected: a conditional load would keep the loop a branch
  // per element (mispredicted half the time on random signs) instead of a vector blend.
  const T zero = from_acc<T>(0);
  for (int64_t i = 0; i < n; ++i) {
    const T g = dy[i];
    dx[i] = to_acc(x[i]) > 0 ? g : zero;
  }
}
template <class T>
void relu6_loop(const T* x, T* y, int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A v = to_acc(x[i]);
    y[i] = from_acc<T>(v > 0 ? (v < 6 ? v : A(6)) : A(0));
  }
}
template <class T>
void relu6_backward_loop(const T* dy, const T* x, T* dx, int64_t n) {
  const T zero = from_acc<T>(0);
  for (int64_t i = 0; i < n; ++i) {
    const T g = dy[i];
    const auto v = to_acc(x[i]);
    dx[i] = v > 0 && v < 6 ? g : zero;
  }
}
template <class T>
void bias_act_loop(const T* x, const T* bias, T* y, int64_t rows, int64_t cols, bool apply_relu) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    if (apply_relu) {  // the choice outside the loop, the relu a select: both vectorize
      for (int64_t c = 0; c < cols; ++c) {
        const auto v = to_acc(xr[c]) + to_acc(bias[c]);
        yr[c] = from_acc<T>(v > 0 ? v : decltype(v)(0));
      }
    } else {
      for (int64_t c = 0; c < cols; ++c) yr[c] = from_acc<T>(to_acc(xr[c]) + to_acc(bias[c]));
    }
  }
}
}  // namespace

template <class T>
void add(const T* a, const T* b, T* out, int64_t n) {
  binary(a, b, out, n, [](auto x, auto y) { return x + y; });
}
template <class T>
void sub(const T* a, const T* b, T* out, int64_t n) {
  binary(a, b, out, n, [](auto x, auto y) { return x - y; });
}
template <class T>
void mul(const T* a, const T* b, T* out, int64_t n) {
  binary(a, b, out, n, [](auto x, auto y) { return x * y; });
}

template <class T>
void div(const T* a, const T* b, T* out, int64_t n) {
  binary(a, b, out, n, [](auto x, auto y) { return x / y; });
}

template <class T>
void scale(const T* x, double alpha, T* out, int64_t n) {
  const auto a = static_cast<acc_t<T>>(alpha);
  parallel_for(n, kElementGrain,
               [=](int64_t i, int64_t e) { scale_loop(x + i, a, out + i, e - i); });
}

template <class T>
void axpy(double alpha, const T* x, T* y, int64_t n) {
  const auto a = static_cast<acc_t<T>>(alpha);
  parallel_for(n, kElementGrain, [=](int64_t i, int64_t e) { axpy_loop(a, x + i, y + i, e - i); });
}

template <class T>
void relu(const T* x, T* y, int64_t n) {
  parallel_for(n, kElementGrain, [=](int64_t i, int64_t e) { relu_loop(x + i, y + i, e - i); });
}

template <class T>
void relu_backward(const T* dy, const T* x, T* dx, int64_t n) {
  parallel_for(n, kElementGrain,
               [=](int64_t i, int64_t e) { relu_backward_loop(dy + i, x + i, dx + i, e - i); });
}

template <class T>
void relu6(const T* x, T* y, int64_t n) {
  parallel_for(n, kElementGrain, [=](int64_t i, int64_t e) { relu6_loop(x + i, y + i, e - i); });
}

template <class T>
void relu6_backward(const T* dy, const T* x, T* dx, int64_t n) {
  parallel_for(n, kElementGrain,
               [=](int64_t i, int64_t e) { relu6_backward_loop(dy + i, x + i, dx + i, e - i); });
}

template <class T>
void bias_act(const T* x, const T* bias, T* y, int64_t rows, int64_t cols, bool apply_relu) {
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(cols, 1));
  parallel_for(rows, grain, [=](int64_t r, int64_t e) {
    bias_act_loop(x + r * cols, bias, y + r * cols, e - r, cols, apply_relu);
  });
}

#define MLAI_INSTANTIATE(T)                                         \
  template void add<T>(const T*, const T*, T*, int64_t);            \
  template void sub<T>(const T*, const T*, T*, int64_t);            \
  template void mul<T>(const T*, const T*, T*, int64_t);            \
  template void div<T>(const T*, const T*, T*, int64_t);            \
  template void scale<T>(const T*, double, T*, int64_t);            \
  template void axpy<T>(double, const T*, T*, int64_t);             \
  template void relu<T>(const T*, T*, int64_t);                     \
  template void relu_backward<T>(const T*, const T*, T*, int64_t);  \
  template void relu6<T>(const T*, T*, int64_t);                    \
  template void relu6_backward<T>(const T*, const T*, T*, int64_t); \
  template void bias_act<T>(const T*, const T*, T*, int64_t, int64_t, bool);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
