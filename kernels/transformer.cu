// CUDA twins of kernels/transformer.cpp. Row kernels (layer norm, softmax and their backwards)
// give each row one warp: its sums are combined with shuffles in a fixed order, so the same
// inputs give the same bits on every run. Layer norm's parameter gradients: one block per tile of
// columns, its threads striding over every row in a fixed order (no atomics, no scratch: the
// launchers allocate nothing and can be captured in a CUDA graph). GELU, the token embedding and
// the token copy are grid-stride loops. Maths in acc_t<T>, rounded to T once per output.
#include "kernels/cuda_map.cuh"
#include "kernels/cuda_types.cuh"
#include "kernels/transformer.h"

namespace mlai::kernels::cuda {

namespace {

constexpr int kRowsPerBlock = dev::kBlock / 32;         // one warp per row
constexpr double kSqrtHalf = 0.70710678118654752440;    // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)

__device__ __forceinline__ float sqrt_acc(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_acc(double v) { return sqrt(v); }
__device__ __forceinline__ float erf_acc(float v) { return erff(v); }
__device__ __forceinline__ double erf_acc(double v) { return erf(v); }

unsigned row_grid(int64_t rows) {
  return dev::grid_size((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
}
// The warp's first row and the step to its next one (the grid's warp count).
__device__ __forceinline__ int64_t first_row() {
  return static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
}
__device__ __forceinline__ int64_t row_step() {
  return static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
}

// ---- layer norm ---------------------------------------------------------------------------------

// Two passes for the statistics (mean, then the squared deviations from it: no cancellation),
// a third for y. Each lane reads x[c] before writing y[c], so y may even be x.
template <class T>
__global__ void layer_norm_forward_kernel(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                                          T* y, acc_t<T>* mean_out, acc_t<T>* rstd_out,
                                          int64_t rows, int64_t cols, acc_t<T> eps) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const A n = static_cast<A>(cols);
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* xr = x + r * cols;
    A s = 0;
    for (int64_t c = lane; c < cols; c += 32) s += dev::to_acc(xr[c]);
    const A mean = dev::warp_sum(s) / n;
    A ss = 0;
    for (int64_t c = lane; c < cols; c += 32) {
      const A d = dev::to_acc(xr[c]) - mean;
      ss += d * d;
    }
    const A rstd = A(1) / sqrt_acc(dev::warp_sum(ss) / n + eps);
    if (lane == 0) {
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
    T* yr = y + r * cols;
    for (int64_t c = lane; c < cols; c += 32) {
      A v = (dev::to_acc(xr[c]) - mean) * rstd;
      if (gamma != nullptr) v = v * gamma[c];
      if (beta != nullptr) v = v + beta[c];
      yr[c] = dev::from_acc<T>(v);
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, per row.
template <class T>
__global__ void layer_norm_dx_kernel(const T* x, const T* dy, const acc_t<T>* gamma,
                                     const acc_t<T>* mean, const acc_t<T>* rstd, T* dx,
                                     int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const A inv_n = A(1) / static_cast<A>(cols);
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    const A m = mean[r], rs = rstd[r];
    A sg = 0, sgx = 0;
    for (int64_t c = lane; c < cols; c += 32) {
      const A xhat = (dev::to_acc(xr[c]) - m) * rs;
      const A g = gamma != nullptr ? dev::to_acc(dyr[c]) * gamma[c] : dev::to_acc(dyr[c]);
      sg += g;
      sgx += g * xhat;
    }
    const A mg = dev::warp_sum(sg) * inv_n, mgx = dev::warp_sum(sgx) * inv_n;
    T* dxr = dx + r * cols;
    for (int64_t c = lane; c < cols; c += 32) {
      const A xhat = (dev::to_acc(xr[c]) - m) * rs;
      const A g = gamma != nullptr ? dev::to_acc(dyr[c]) * gamma[c] : dev::to_acc(dyr[c]);
      dxr[c] = dev::from_acc<T>(rs * (g - mg - xhat * mgx));
    }
  }
}

// Columns per block in the parameter-gradient kernel: one 32-byte sector of a row (8 floats,
// 16 halves, 4 doubles), so loads waste nothing and wide rows still make many blocks.
template <class T>
constexpr int kTileCols = 32 / static_cast<int>(sizeof(T));

// dgamma[c] = sum over rows of dy * xhat, dbeta[c] = sum of dy; overwritten (zero when rows is
// 0). Block (kTileCols, kLanes): lane y sums rows y, y + kLanes, ... in order, then thread y == 0
// adds the lanes in order: the same bits on every run, whatever the GPU.
template <class T>
__global__ void layer_norm_param_grads_kernel(const T* x, const T* dy, const acc_t<T>* mean,
                                              const acc_t<T>* rstd, acc_t<T>* dgamma,
                                              acc_t<T>* dbeta, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  constexpr int kTile = kTileCols<T>, kLanes = dev::kBlock / kTile;
  __shared__ A sh_gx[kLanes][kTile], sh_g[kLanes][kTile];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  A sgx = 0, sg = 0;
  if (c < cols) {
    for (int64_t r = threadIdx.y; r < rows; r += kLanes) {
      const A g = dev::to_acc(dy[r * cols + c]);
      sg += g;
      sgx += g * ((dev::to_acc(x[r * cols + c]) - mean[r]) * rstd[r]);
    }
  }
  sh_gx[threadIdx.y][threadIdx.x] = sgx;
  sh_g[threadIdx.y][threadIdx.x] = sg;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  A tgx = 0, tg = 0;
  for (int j = 0; j < kLanes; ++j) {
    tgx += sh_gx[j][threadIdx.x];
    tg += sh_g[j][threadIdx.x];
  }
  if (dgamma != nullptr) dgamma[c] = tgx;
  if (dbeta != nullptr) dbeta[c] = tg;
}

// ---- elementwise --------------------------------------------------------------------------------

template <class T>
struct GeluOp {  // x -> x * Phi(x)
  __device__ T operator()(T xv) const {
    using A = acc_t<T>;
    const A v = dev::to_acc(xv);
    return dev::from_acc<T>(v * (A(0.5) * (A(1) + erf_acc(v * static_cast<A>(kSqrtHalf)))));
  }
};
template <class T>
struct GeluBackwardOp {  // (dy, x) -> dy * (Phi(x) + x phi(x))
  __device__ T operator()(T dyv, T xv) const {
    using A = acc_t<T>;
    const A v = dev::to_acc(xv);
    const A cdf = A(0.5) * (A(1) + erf_acc(v * static_cast<A>(kSqrtHalf)));
    const A pdf = dev::exp_acc(A(-0.5) * v * v) * static_cast<A>(kInvSqrt2Pi);
    return dev::from_acc<T>(dev::to_acc(dyv) * (cdf + v * pdf));
  }
};

// ---- softmax ------------------------------------------------------------------------------------

// Max, then the sum of exp(x - max), then y = exp(x - max) * (1 / sum) (the exponential computed
// again rather than stored in T and read back: one rounding). Each lane reads x[c] before
// writing y[c], so y may be x.
template <class T>
__global__ void softmax_rows_kernel(const T* x, T* y, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* xr = x + r * cols;
    A mx = -INFINITY;
    for (int64_t c = lane; c < cols; c += 32) mx = dev::fmax_acc(mx, dev::to_acc(xr[c]));
    mx = dev::warp_max(mx);
    A s = 0;
    for (int64_t c = lane; c < cols; c += 32) s += dev::exp_acc(dev::to_acc(xr[c]) - mx);
    const A inv = A(1) / dev::warp_sum(s);
    T* yr = y + r * cols;
    for (int64_t c = lane; c < cols; c += 32)
      yr[c] = dev::from_acc<T>(dev::exp_acc(dev::to_acc(xr[c]) - mx) * inv);
  }
}

// dx = scale * y * (dy - sum(dy * y)); each lane reads dy[c] before writing dx[c].
template <class T>
__global__ void softmax_rows_backward_kernel(const T* y, const T* dy, T* dx, int64_t rows,
                                             int64_t cols, acc_t<T> scale) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    A dot = 0;
    for (int64_t c = lane; c < cols; c += 32) dot += dev::to_acc(dyr[c]) * dev::to_acc(yr[c]);
    dot = dev::warp_sum(dot);
    T* dxr = dx + r * cols;
    for (int64_t c = lane; c < cols; c += 32)
      dxr[c] = dev::from_acc<T>(scale * dev::to_acc(yr[c]) * (dev::to_acc(dyr[c]) - dot));
  }
}

// ---- tokens -------------------------------------------------------------------------------------

template <class T>
__global__ void embed_tokens_kernel(const T* x, const T* cls, const T* pos, T* out, int64_t n,
                                    int64_t patches, int64_t e) {
  const int64_t tokens = patches + 1, total = n * tokens * e;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t j = i % e, bt = i / e, t = bt % tokens, b = bt / tokens;
    const T v = t == 0 ? cls[j] : x[(b * patches + t - 1) * e + j];
    out[i] = dev::from_acc<T>(dev::to_acc(v) + dev::to_acc(pos[t * e + j]));
  }
}

// U is T, or a 16-byte pack of T when rows are whole packs (e then counts packs).
template <class U>
__global__ void copy_tokens_kernel(const U* src, int64_t src_tokens, int64_t src_at, U* dst,
                                   int64_t dst_tokens, int64_t dst_at, int64_t count, int64_t n,
                                   int64_t e) {
  const int64_t total = n * count * e;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t j = i % e, bt = i / e, t = bt % count, b = bt / count;
    dst[(b * dst_tokens + dst_at + t) * e + j] = src[(b * src_tokens + src_at + t) * e + j];
  }
}

}  // namespace

template <class T>
void layer_norm_forward(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                        acc_t<T>* mean, acc_t<T>* rstd, int64_t rows, int64_t cols, double eps,
                        StreamHandle stream) {
  if (rows <= 0 || cols <= 0) return;
  layer_norm_forward_kernel<T><<<row_grid(rows), dev::kBlock, 0, stream>>>(
      x, gamma, beta, y, mean, rstd, rows, cols, static_cast<acc_t<T>>(eps));
  MLAI_LAUNCH_CHECK();
}

template <class T>
void layer_norm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* mean,
                         const acc_t<T>* rstd, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                         int64_t rows, int64_t cols, StreamHandle stream) {
  if (rows < 0 || cols <= 0) return;
  // The parameter gradients first: they read dy, which the dx pass could then overwrite in place.
  if (dgamma != nullptr || dbeta != nullptr) {
    constexpr int kTile = kTileCols<T>;
    layer_norm_param_grads_kernel<T>
        <<<static_cast<unsigned>((cols + kTile - 1) / kTile), dim3(kTile, dev::kBlock / kTile), 0,
           stream>>>(x, dy, mean, rstd, dgamma, dbeta, rows, cols);
    MLAI_LAUNCH_CHECK();
  }
  if (rows == 0) return;
  layer_norm_dx_kernel<T>
      <<<row_grid(rows), dev::kBlock, 0, stream>>>(x, dy, gamma, mean, rstd, dx, rows, cols);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void gelu(const T* x, T* y, int64_t n, StreamHandle stream) {
  launch_map<T, 1>(y, x, x, n, GeluOp<T>{}, stream);
}

template <class T>
void gelu_backward(const T* dy, const T* x, T* dx, int64_t n, StreamHandle stream) {
  launch_map<T, 2>(dx, dy, x, n, GeluBackwardOp<T>{}, stream);
}

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t cols, StreamHandle stream) {
  if (rows <= 0 || cols <= 0) return;
  softmax_rows_kernel<T><<<row_grid(rows), dev::kBlock, 0, stream>>>(x, y, rows, cols);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void softmax_rows_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols, double scale,
                           StreamHandle stream) {
  if (rows <= 0 || cols <= 0) return;
  softmax_rows_backward_kernel<T><<<row_grid(rows), dev::kBlock, 0, stream>>>(
      y, dy, dx, rows, cols, static_cast<acc_t<T>>(scale));
  MLAI_LAUNCH_CHECK();
}

template <class T>
void embed_tokens(const T* x, const T* cls, const T* pos, T* out, int64_t n, int64_t patches,
                  int64_t e, StreamHandle stream) {
  if (n <= 0 || patches < 0 || e <= 0) return;
  embed_tokens_kernel<T><<<dev::grid_size(n * (patches + 1) * e), dev::kBlock, 0, stream>>>(
      x, cls, pos, out, n, patches, e);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void copy_tokens(const T* src, int64_t src_tokens, int64_t src_at, T* dst, int64_t dst_tokens,
                 int64_t dst_at, int64_t count, int64_t n, int64_t e, StreamHandle stream) {
  if (n <= 0 || count <= 0 || e <= 0) return;
  using P = dev::Pack<T>;
  // Row starts are multiples of e elements: with e a whole number of packs and both bases
  // aligned, every row is a run of aligned packs.
  if (e % P::kN == 0 && dev::aligned16(src) && dev::aligned16(dst)) {
    const int64_t ep = e / P::kN;
    copy_tokens_kernel<P><<<dev::grid_size(n * count * ep), dev::kBlock, 0, stream>>>(
        reinterpret_cast<const P*>(src), src_tokens, src_at, reinterpret_cast<P*>(dst), dst_tokens,
        dst_at, count, n, ep);
  } else {
    copy_tokens_kernel<T><<<dev::grid_size(n * count * e), dev::kBlock, 0, stream>>>(
        src, src_tokens, src_at, dst, dst_tokens, dst_at, count, n, e);
  }
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                        \
  template void layer_norm_forward<T>(const T*, const acc_t<T>*, const acc_t<T>*, T*, acc_t<T>*,   \
                                      acc_t<T>*, int64_t, int64_t, double, StreamHandle);          \
  template void layer_norm_backward<T>(const T*, const T*, const acc_t<T>*, const acc_t<T>*,       \
                                       const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, int64_t,         \
                                       int64_t, StreamHandle);                                     \
  template void gelu<T>(const T*, T*, int64_t, StreamHandle);                                      \
  template void gelu_backward<T>(const T*, const T*, T*, int64_t, StreamHandle);                   \
  template void softmax_rows<T>(const T*, T*, int64_t, int64_t, StreamHandle);                     \
  template void softmax_rows_backward<T>(const T*, const T*, T*, int64_t, int64_t, double,         \
                                         StreamHandle);                                            \
  template void embed_tokens<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t,       \
                                StreamHandle);                                                     \
  template void copy_tokens<T>(const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t, int64_t, \
                               int64_t, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
