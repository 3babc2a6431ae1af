// CUDA twins of kernels/elementwise.cpp. One grid-stride map kernel over 16-byte packs (when
// every pointer is 16-byte aligned) with a scalar tail; arithmetic in acc_t<T>, rounded back to
// T exactly as the CPU twins do, so fp32/fp64 results match the CPU bit for bit.
#include "kernels/cuda_map.cuh"
#include "kernels/cuda_types.cuh"
#include "kernels/elementwise.h"

namespace mlai::kernels::cuda {

namespace {

// Ops take and return storage values; the accumulator maths lives inside them.
template <class T>
struct AddOp {
  __device__ T operator()(T a, T b) const {
    return dev::from_acc<T>(dev::to_acc(a) + dev::to_acc(b));
  }
};
template <class T>
struct SubOp {
  __device__ T operator()(T a, T b) const {
    return dev::from_acc<T>(dev::to_acc(a) - dev::to_acc(b));
  }
};
template <class T>
struct MulOp {
  __device__ T operator()(T a, T b) const {
    return dev::from_acc<T>(dev::to_acc(a) * dev::to_acc(b));
  }
};
template <class T>
struct DivOp {
  __device__ T operator()(T a, T b) const {
    return dev::from_acc<T>(dev::to_acc(a) / dev::to_acc(b));
  }
};
template <class T>
struct ScaleOp {
  acc_t<T> alpha;
  __device__ T operator()(T x) const { return dev::from_acc<T>(alpha * dev::to_acc(x)); }
};
template <class T>
struct AxpyOp {  // (x, y) -> y + alpha * x, with two roundings like the CPU loop
  acc_t<T> alpha;
  __device__ T operator()(T x, T y) const {
    return dev::from_acc<T>(dev::add_rn(dev::to_acc(y), dev::mul_rn(alpha, dev::to_acc(x))));
  }
};
template <class T>
struct ReluOp {  // nan and -0 give +0, as on the CPU
  __device__ T operator()(T x) const {
    const acc_t<T> v = dev::to_acc(x);
    return dev::from_acc<T>(v > 0 ? v : acc_t<T>(0));
  }
};
template <class T>
struct ReluBackwardOp {  // (dy, x) -> dy where x > 0; dy is passed through untouched
  __device__ T operator()(T dy, T x) const {
    return dev::to_acc(x) > 0 ? dy : dev::from_acc<T>(acc_t<T>(0));
  }
};

template <class T>
struct Relu6Op {  // nan gives 0, as on the CPU
  __device__ T operator()(T x) const {
    const acc_t<T> v = dev::to_acc(x);
    return dev::from_acc<T>(v > 0 ? (v < 6 ? v : acc_t<T>(6)) : acc_t<T>(0));
  }
};
template <class T>
struct Relu6BackwardOp {  // (dy, x) -> dy where 0 < x < 6
  __device__ T operator()(T dy, T x) const {
    const acc_t<T> v = dev::to_acc(x);
    return v > 0 && v < 6 ? dy : dev::from_acc<T>(acc_t<T>(0));
  }
};

// y[r, c] = x[r, c] + bias[c] (then relu). Packs never straddle rows when cols % pack == 0.
template <class T>
__global__ void bias_act_kernel(const T* x, const T* bias, T* y, int64_t rows, int64_t cols,
                                bool apply_relu, bool vec) {
  using A = acc_t<T>;
  const int64_t n = rows * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  auto one = [apply_relu](T xv, T bv) {
    A v = dev::to_acc(xv) + dev::to_acc(bv);
    if (apply_relu && !(v > 0)) v = 0;
    return dev::from_acc<T>(v);
  };
  if (vec) {
    using P = dev::Pack<T>;
    for (int64_t p = tid; p < n / P::kN; p += stride) {
      const int64_t c = (p * P::kN) % cols;
      const P a = reinterpret_cast<const P*>(x)[p];
      const P b = *reinterpret_cast<const P*>(bias + c);
      P r;
#pragma unroll
      for (int j = 0; j < P::kN; ++j) r.v[j] = one(a.v[j], b.v[j]);
      reinterpret_cast<P*>(y)[p] = r;
    }
    return;  // cols % kN == 0, so n % kN == 0: no tail
  }
  for (int64_t i = tid; i < n; i += stride) y[i] = one(x[i], bias[i % cols]);
}

}  // namespace

template <class T>
void add(const T* a, const T* b, T* out, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(out, a, b, n, AddOp<T>{}, stream);
}
template <class T>
void sub(const T* a, const T* b, T* out, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(out, a, b, n, SubOp<T>{}, stream);
}
template <class T>
void mul(const T* a, const T* b, T* out, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(out, a, b, n, MulOp<T>{}, stream);
}
template <class T>
void div(const T* a, const T* b, T* out, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(out, a, b, n, DivOp<T>{}, stream);
}
template <class T>
void scale(const T* x, double alpha, T* out, int64_t n, StreamHandle stream) {
  launch_map<T, 1>(out, x, x, n, ScaleOp<T>{static_cast<acc_t<T>>(alpha)}, stream);
}
template <class T>
void axpy(double alpha, const T* x, T* y, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(y, x, y, n, AxpyOp<T>{static_cast<acc_t<T>>(alpha)}, stream);
}
template <class T>
void relu(const T* x, T* y, int64_t n, StreamHandle stream) {
  launch_map<T, 1>(y, x, x, n, ReluOp<T>{}, stream);
}
template <class T>
void relu_backward(const T* dy, const T* x, T* dx, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(dx, dy, x, n, ReluBackwardOp<T>{}, stream);
}

template <class T>
void relu6(const T* x, T* y, int64_t n, StreamHandle stream) {
  launch_map<T, 1>(y, x, x, n, Relu6Op<T>{}, stream);
}
template <class T>
void relu6_backward(const T* dy, const T* x, T* dx, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(dx, dy, x, n, Relu6BackwardOp<T>{}, stream);
}

template <class T>
void bias_act(const T* x, const T* bias, T* y, int64_t rows, int64_t cols, bool apply_relu,
              StreamHandle stream) {
  const int64_t n = rows * cols;
  if (n <= 0) return;
  constexpr int kN = dev::Pack<T>::kN;
  const bool vec = cols % kN == 0 && dev::aligned16(x) && dev::aligned16(bias) && dev::aligned16(y);
  bias_act_kernel<T><<<dev::grid_size(vec ? n / kN : n), dev::kBlock, 0, stream>>>(
      x, bias, y, rows, cols, apply_relu, vec);
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                       \
  template void add<T>(const T*, const T*, T*, int64_t, StreamHandle);            \
  template void sub<T>(const T*, const T*, T*, int64_t, StreamHandle);            \
  template void mul<T>(const T*, const T*, T*, int64_t, StreamHandle);            \
  template void div<T>(const T*, const T*, T*, int64_t, StreamHandle);            \
  template void scale<T>(const T*, double, T*, int64_t, StreamHandle);            \
  template void axpy<T>(double, const T*, T*, int64_t, StreamHandle);             \
  template void relu<T>(const T*, T*, int64_t, StreamHandle);                     \
  template void relu_backward<T>(const T*, const T*, T*, int64_t, StreamHandle);  \
  template void relu6<T>(const T*, T*, int64_t, StreamHandle);                    \
  template void relu6_backward<T>(const T*, const T*, T*, int64_t, StreamHandle); \
  template void bias_act<T>(const T*, const T*, T*, int64_t, int64_t, bool, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
