// CUDA twins of the fused batch norm in kernels/batchnorm.cpp: y = act(bn(x) + z) and its
// backward over NHWC activations seen as [rows, c]. Three launches each way:
//   stats:    blocks of 32 channels x 8 row lanes; each thread sums its rows in double (shifted
//             by the channel's first value, so a large mean does not cancel the variance), the
//             block adds its lanes and writes one partial per (row block, channel);
//   finalize: one warp per channel adds the partials in double (fixed order: deterministic),
//             writes the saved / running statistics or dgamma, dbeta and the per-channel
//             coefficients of the apply pass;
//   apply:    elementwise over 16-byte packs, the epilogue (z, relu or relu6) or the masked dy
//             inside.
#include <algorithm>

#include "kernels/batchnorm.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {

constexpr int kTileC = 32;  // channels per block (one warp reads 32 neighbours in a row)
constexpr int kLanes = 8;   // row lanes per block
constexpr int kRowsPerThread = 16;

struct Layout {
  int64_t tiles, row_blocks;
};
Layout layout(int64_t rows, int64_t c) {
  const int64_t tiles = (c + kTileC - 1) / kTileC;
  // Enough blocks to fill the biggest GPUs (~1024 in all), at least kRowsPerThread rows a thread.
  const int64_t want = (rows + kLanes * kRowsPerThread - 1) / (kLanes * kRowsPerThread);
  const int64_t cap = std::max<int64_t>(1, 1024 / tiles);
  return {tiles, std::clamp<int64_t>(want, 1, std::min<int64_t>(cap, dev::kMaxGrid))};
}

// Scratch: two double partial arrays [row_blocks][c], then three acc_t coefficient arrays [c].
template <class A>
struct Scratch {
  double* p0;
  double* p1;
  A* k0;
  A* k1;
  A* k2;
  Scratch(void* base, int64_t row_blocks, int64_t c) {
    p0 = static_cast<double*>(base);
    p1 = p0 + row_blocks * c;
    k0 = reinterpret_cast<A*>(p1 + row_blocks * c);
    k1 = k0 + c;
    k2 = k1 + c;
  }
};

// Adds a thread's two sums over the block's row lanes (in double, lane order: deterministic) and
// writes the block's partials for channel ch. Every thread of the block calls it.
__device__ void store_block_sums(double a, double b, int64_t c, int64_t ch, double* out_a,
                                 double* out_b) {
  __shared__ double sh_a[kLanes][kTileC], sh_b[kLanes][kTileC];
  sh_a[threadIdx.y][threadIdx.x] = a;
  sh_b[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y != 0 || ch >= c) return;
  double ta = 0, tb = 0;
  for (int j = 0; j < kLanes; ++j) {
    ta += sh_a[j][threadIdx.x];
    tb += sh_b[j][threadIdx.x];
  }
  out_a[static_cast<int64_t>(blockIdx.y) * c + ch] = ta;
  out_b[static_cast<int64_t>(blockIdx.y) * c + ch] = tb;
}

// Per channel: sum(x - x0) and sum((x - x0)^2) with x0 = x[0, ch].
template <class T>
__global__ void stats_kernel(const T* x, int64_t rows, int64_t c, double* s1_out, double* s2_out) {
  using A = acc_t<T>;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  double s1 = 0, s2 = 0;  // double per thread too: robust when row 0 is far from the mean
  if (ch < c) {
    const A x0 = dev::to_acc(x[ch]);
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * kLanes + threadIdx.y; r < rows;
         r += static_cast<int64_t>(gridDim.y) * kLanes) {
      const double d = static_cast<double>(dev::to_acc(x[r * c + ch]) - x0);
      s1 += d;
      s2 += d * d;
    }
  }
  store_block_sums(s1, s2, c, ch, s1_out, s2_out);
}

// Per channel: sum(g) and sum(g * (x - mean)), g = dy masked outside 0 < y < cap (y may be
// null).
template <class T>
__global__ void grad_sums_kernel(const T* x, const T* dy, const T* y, float cap,
                                 const acc_t<T>* mean, int64_t rows, int64_t c, double* sg_out,
                                 double* sgx_out) {
  using A = acc_t<T>;
  const int64_t ch = static_cast<int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  double sg = 0, sgx = 0;
  if (ch < c) {
    const A m = mean[ch];
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * kLanes + threadIdx.y; r < rows;
         r += static_cast<int64_t>(gridDim.y) * kLanes) {
      const int64_t i = r * c + ch;
      if (y != nullptr) {
        const A v = dev::to_acc(y[i]);
        if (!(v > 0 && v < static_cast<A>(cap))) continue;
      }
      const double g = dev::to_acc(dy[i]);
      sg += g;
      sgx += g * static_cast<double>(dev::to_acc(x[i]) - m);
    }
  }
  store_block_sums(sg, sgx, c, ch, sg_out, sgx_out);
}

// The two partial sums of channel ch over all row blocks, in every lane of the warp.
__device__ void warp_partials(const double* p0, const double* p1, int64_t row_blocks, int64_t c,
                              int64_t ch, double& t0, double& t1) {
  const int lane = threadIdx.x & 31;
  t0 = 0;
  t1 = 0;
  for (int64_t b = lane; b < row_blocks; b += 32) {
    t0 += p0[b * c + ch];
    t1 += p1[b * c + ch];
  }
  t0 = dev::warp_sum(t0);
  t1 = dev::warp_sum(t1);
}

// Training statistics: saved mean / inv_std, running statistics (unbiased variance), and the
// apply pass's coefficients k0 = mean, k1 = gamma * inv_std, k2 = beta.
template <class T, class A = acc_t<T>>
__global__ void finalize_train_kernel(const double* s1, const double* s2, const T* x,
                                      const A* gamma, const A* beta, A* running_mean,
                                      A* running_var, A* save_mean, A* save_inv_std, int64_t rows,
                                      int64_t row_blocks, int64_t c, double momentum, double eps,
                                      A* k0, A* k1, A* k2) {
  // One warp per channel, striding over channels when there are more than warps.
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t ch = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; ch < c;
       ch += warps) {
    double t1, t2;
    warp_partials(s1, s2, row_blocks, c, ch, t1, t2);
    if ((threadIdx.x & 31) != 0) continue;
    const double n = static_cast<double>(rows);
    const double d = t1 / n;
    const double mean = static_cast<double>(dev::to_acc(x[ch])) + d;  // the shift: row 0
    const double var = fmax(t2 / n - d * d, 0.0);  // biased: the one training normalises with
    const double inv_std = 1.0 / sqrt(var + eps);
    save_mean[ch] = static_cast<A>(mean);
    save_inv_std[ch] = static_cast<A>(inv_std);
    const double unbias = rows > 1 ? n / (n - 1) : 1.0;
    if (running_mean != nullptr)
      running_mean[ch] = static_cast<A>((1 - momentum) * running_mean[ch] + momentum * mean);
    if (running_var != nullptr)
      running_var[ch] = static_cast<A>((1 - momentum) * running_var[ch] + momentum * var * unbias);
    k0[ch] = static_cast<A>(mean);
    k1[ch] = static_cast<A>(gamma[ch] * inv_std);
    k2[ch] = beta[ch];
  }
}

template <class A>
__global__ void finalize_eval_kernel(const A* gamma, const A* beta, const A* running_mean,
                                     const A* running_var, int64_t c, double eps, A* k0, A* k1,
                                     A* k2) {
  for (int64_t ch = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; ch < c;
       ch += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    k0[ch] = running_mean[ch];
    k1[ch] = static_cast<A>(gamma[ch] / sqrt(static_cast<double>(running_var[ch]) + eps));
    k2[ch] = beta[ch];
  }
}

// dgamma = sum(g * xhat), dbeta = sum(g); dx = k0 * (n g - k1 - xhat * k2) with
// k0 = gamma * inv_std / n, k1 = dbeta, k2 = dgamma (the CPU twin's formula).
template <class A>
__global__ void finalize_backward_kernel(const double* sg, const double* sgx, const A* gamma,
                                         const A* inv_std, int64_t rows, int64_t row_blocks,
                                         int64_t c, A* dgamma, A* dbeta, A* k0, A* k1, A* k2) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t ch = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; ch < c;
       ch += warps) {
    double t_g, t_gx;
    warp_partials(sg, sgx, row_blocks, c, ch, t_g, t_gx);
    if ((threadIdx.x & 31) != 0) continue;
    const double is = static_cast<double>(inv_std[ch]);
    dbeta[ch] = static_cast<A>(t_g);
    dgamma[ch] = static_cast<A>(t_gx * is);
    k0[ch] = static_cast<A>(static_cast<double>(gamma[ch]) * is / static_cast<double>(rows));
    k1[ch] = static_cast<A>(t_g);
    k2[ch] = static_cast<A>(t_gx * is);
  }
}

// y = (x - k0) * k1 + k2 [+ z] [relu, capped at cap: relu6], per element; packs never straddle
// rows (c % kN == 0).
template <class T>
__global__ void apply_forward_kernel(const T* x, const T* z, bool relu, float cap,
                                     const acc_t<T>* k0, const acc_t<T>* k1, const acc_t<T>* k2,
                                     T* y, int64_t n, int64_t c, bool vec) {
  using A = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  auto one = [&](T xv, T zv, int64_t ch) {
    A v = (dev::to_acc(xv) - k0[ch]) * k1[ch] + k2[ch];
    if (z != nullptr) v += dev::to_acc(zv);
    if (relu) {
      if (!(v > 0)) v = 0;
      if (v > static_cast<A>(cap)) v = static_cast<A>(cap);
    }
    return dev::from_acc<T>(v);
  };
  if (vec) {
    using P = dev::Pack<T>;
    for (int64_t p = tid; p < n / P::kN; p += stride) {
      const int64_t ch = (p * P::kN) % c;
      const P a = reinterpret_cast<const P*>(x)[p];
      P b{};
      if (z != nullptr) b = reinterpret_cast<const P*>(z)[p];
      P r;
#pragma unroll
      for (int j = 0; j < P::kN; ++j) r.v[j] = one(a.v[j], b.v[j], ch + j);
      reinterpret_cast<P*>(y)[p] = r;
    }
    return;
  }
  for (int64_t i = tid; i < n; i += stride) y[i] = one(x[i], z != nullptr ? z[i] : x[i], i % c);
}

// g = dy masked outside 0 < y < cap; dx = k0 * (n g - k1 - xhat * k2), xhat = (x - mean) *
// inv_std; dz = g.
template <class T>
__global__ void apply_backward_kernel(const T* x, const T* dy, const T* y, float cap,
                                      const acc_t<T>* mean, const acc_t<T>* inv_std,
                                      const acc_t<T>* k0, const acc_t<T>* k1, const acc_t<T>* k2,
                                      T* dx, T* dz, int64_t n, int64_t c, double rows) {
  using A = acc_t<T>;
  const A count = static_cast<A>(rows);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t ch = i % c;
    const A yv = y == nullptr ? A(1) : dev::to_acc(y[i]);
    const bool pass = y == nullptr || (yv > 0 && yv < static_cast<A>(cap));
    const T gt = pass ? dy[i] : dev::from_acc<T>(A(0));
    const A g = dev::to_acc(gt);
    const A xhat = (dev::to_acc(x[i]) - mean[ch]) * inv_std[ch];
    dx[i] = dev::from_acc<T>(k0[ch] * (count * g - k1[ch] - xhat * k2[ch]));
    if (dz != nullptr) dz[i] = gt;
  }
}

template <class T>
void launch_apply_forward(const T* x, const T* z, BnAct act, const acc_t<T>* k0, const acc_t<T>* k1,
                          const acc_t<T>* k2, T* y, int64_t n, int64_t c, StreamHandle stream) {
  using P = dev::Pack<T>;
  const bool vec = c % P::kN == 0 && dev::aligned16(x) && dev::aligned16(y) &&
                   (z == nullptr || dev::aligned16(z));
  const int64_t work = vec ? n / P::kN : n;
  apply_forward_kernel<T><<<dev::grid_size(work), dev::kBlock, 0, stream>>>(
      x, z, static_cast<bool>(act), act.cap(), k0, k1, k2, y, n, c, vec);
  MLAI_LAUNCH_CHECK();
}

}  // namespace

size_t batchnorm_scratch_bytes(int64_t rows, int64_t c) {
  const Layout l = layout(rows, c);
  // acc_t is at most a double: size the coefficients as doubles whatever T is.
  return static_cast<size_t>(2 * l.row_blocks * c + 3 * c) * sizeof(double);
}

template <class T>
void batchnorm_forward_train(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                             acc_t<T>* running_mean, acc_t<T>* running_var, acc_t<T>* save_mean,
                             acc_t<T>* save_inv_std, int64_t rows, int64_t c, double momentum,
                             double eps, const T* z, BnAct act, void* scratch,
                             StreamHandle stream) {
  using A = acc_t<T>;
  if (rows <= 0 || c <= 0) return;
  const Layout l = layout(rows, c);
  Scratch<A> s(scratch, l.row_blocks, c);
  stats_kernel<T><<<dim3(static_cast<unsigned>(l.tiles), static_cast<unsigned>(l.row_blocks)),
                    dim3(kTileC, kLanes), 0, stream>>>(x, rows, c, s.p0, s.p1);
  MLAI_LAUNCH_CHECK();
  finalize_train_kernel<T><<<dev::grid_size(c * 32), dev::kBlock, 0, stream>>>(
      s.p0, s.p1, x, gamma, beta, running_mean, running_var, save_mean, save_inv_std, rows,
      l.row_blocks, c, momentum, eps, s.k0, s.k1, s.k2);
  MLAI_LAUNCH_CHECK();
  launch_apply_forward(x, z, act, s.k0, s.k1, s.k2, y, rows * c, c, stream);
}

template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z, BnAct act,
                            void* scratch, StreamHandle stream) {
  using A = acc_t<T>;
  if (rows <= 0 || c <= 0) return;
  Scratch<A> s(scratch, layout(rows, c).row_blocks, c);
  finalize_eval_kernel<A><<<dev::grid_size(c), dev::kBlock, 0, stream>>>(
      gamma, beta, running_mean, running_var, c, eps, s.k0, s.k1, s.k2);
  MLAI_LAUNCH_CHECK();
  launch_apply_forward(x, z, act, s.k0, s.k1, s.k2, y, rows * c, c, stream);
}

template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y, T* dz, float y_cap, void* scratch,
                        StreamHandle stream) {
  using A = acc_t<T>;
  if (rows <= 0 || c <= 0) return;
  const Layout l = layout(rows, c);
  Scratch<A> s(scratch, l.row_blocks, c);
  grad_sums_kernel<T>
      <<<dim3(static_cast<unsigned>(l.tiles), static_cast<unsigned>(l.row_blocks)),
         dim3(kTileC, kLanes), 0, stream>>>(x, dy, y, y_cap, save_mean, rows, c, s.p0, s.p1);
  MLAI_LAUNCH_CHECK();
  finalize_backward_kernel<A><<<dev::grid_size(c * 32), dev::kBlock, 0, stream>>>(
      s.p0, s.p1, gamma, save_inv_std, rows, l.row_blocks, c, dgamma, dbeta, s.k0, s.k1, s.k2);
  MLAI_LAUNCH_CHECK();
  const int64_t n = rows * c;
  apply_backward_kernel<T><<<dev::grid_size(n), dev::kBlock, 0, stream>>>(
      x, dy, y, y_cap, save_mean, save_inv_std, s.k0, s.k1, s.k2, dx, dz, n, c,
      static_cast<double>(rows));
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                        \
  template void batchnorm_forward_train<T>(                                                        \
      const T*, const acc_t<T>*, const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, acc_t<T>*, acc_t<T>*,  \
      int64_t, int64_t, double, double, const T*, BnAct, void*, StreamHandle);                     \
  template void batchnorm_forward_eval<T>(const T*, const acc_t<T>*, const acc_t<T>*,              \
                                          const acc_t<T>*, const acc_t<T>*, T*, int64_t, int64_t,  \
                                          double, const T*, BnAct, void*, StreamHandle);           \
  template void batchnorm_backward<T>(const T*, const T*, const acc_t<T>*, const acc_t<T>*,        \
                                      const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, int64_t, int64_t, \
                                      const T*, T*, float, void*, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
