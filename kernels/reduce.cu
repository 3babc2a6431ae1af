// CUDA twins of kernels/reduce.cpp. Every reduction runs in a fixed order (no float atomics),
// so results are bitwise reproducible run to run. sum_all: one block for small inputs, else two
// passes through a small scratch buffer from the caching allocator. sum_dim / max_dim over
// [outer, dim, inner]: a thread per output for short reductions, else a block per tile of up to
// 32 inner positions whose rows split the reduced axis. Sums accumulate in acc_t<T> (the CPU
// twin uses double, so fp32 results agree to rounding, not bit for bit).
#include <algorithm>

#include "kernels/cuda_types.cuh"
#include "kernels/reduce.h"
#include "tensor/allocator.h"

namespace mlai::kernels::cuda {

namespace {

constexpr int kFinalThreads = 1024;
constexpr int64_t kOneBlockMax = 1 << 16;  // up to here one block reads everything
constexpr int kMaxPartials = 1024;
constexpr int kTileThreads = 256;  // TX * TY
constexpr int64_t kShortDim = 32;  // a thread per output up to this many terms

// This thread's share of x[0..n) (indices tid, tid + stride, ...; packs of 16 bytes when vec).
template <class A, class T>
__device__ A strided_sum(const T* x, int64_t n, int64_t tid, int64_t stride, bool vec) {
  A s = 0;
  int64_t tail = 0;
  if (vec) {
    using P = dev::Pack<T>;
    for (int64_t p = tid; p < n / P::kN; p += stride) {
      const P v = reinterpret_cast<const P*>(x)[p];
#pragma unroll
      for (int j = 0; j < P::kN; ++j) s += dev::to_acc(v.v[j]);
    }
    tail = n / P::kN * P::kN;
  }
  for (int64_t i = tail + tid; i < n; i += stride) s += dev::to_acc(x[i]);
  return s;
}

template <class T>
__global__ void sum_partials_kernel(const T* x, int64_t n, bool vec, acc_t<T>* partials) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const acc_t<T> s = dev::block_sum(
      strided_sum<acc_t<T>>(x, n, tid, static_cast<int64_t>(gridDim.x) * blockDim.x, vec));
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// One block: out[0] = scale * sum(x[0..n)); In is T (direct) or acc_t<T> (partials).
template <class In, class T>
__global__ void sum_final_kernel(const In* x, int64_t n, bool vec, double scale, T* out) {
  const acc_t<T> s = dev::block_sum(strided_sum<acc_t<T>>(x, n, threadIdx.x, blockDim.x, vec));
  if (threadIdx.x == 0) out[0] = dev::from_acc<T>(static_cast<double>(s) * scale);
}

// One thread per output, summing its terms in index order.
template <class T>
__global__ void sum_dim_thread_kernel(const T* x, T* out, int64_t outer, int64_t dim, int64_t inner,
                                      double scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < outer * inner;
       k += stride) {
    const int64_t o = k / inner, i = k - o * inner;
    const T* p = x + o * dim * inner + i;
    acc_t<T> s = 0;
    for (int64_t d = 0; d < dim; ++d) s += dev::to_acc(p[d * inner]);
    out[k] = dev::from_acc<T>(static_cast<double>(s) * scale);
  }
}

// Tiles of blockDim.x inner positions for one outer index; threadIdx.y strides the reduced
// axis, then a shared-memory tree over y (blockDim.y a power of two) combines the rows.
template <class T>
__global__ void sum_dim_tile_kernel(const T* x, T* out, int64_t outer, int64_t dim, int64_t inner,
                                    int64_t tiles, double scale) {
  using A = acc_t<T>;
  __shared__ A part[kTileThreads];
  const int tx = threadIdx.x, ty = threadIdx.y, nx = blockDim.x, ny = blockDim.y;
  for (int64_t t = blockIdx.x; t < outer * tiles; t += gridDim.x) {
    const int64_t o = t / tiles, i = (t - o * tiles) * nx + tx;
    A s = 0;
    if (i < inner)
      for (int64_t d = ty; d < dim; d += ny) s += dev::to_acc(x[(o * dim + d) * inner + i]);
    part[ty * nx + tx] = s;
    __syncthreads();
    for (int h = ny / 2; h > 0; h /= 2) {
      if (ty < h) part[ty * nx + tx] += part[(ty + h) * nx + tx];
      __syncthreads();
    }
    if (ty == 0 && i < inner)
      out[o * inner + i] = dev::from_acc<T>(static_cast<double>(part[tx]) * scale);
    __syncthreads();  // part is reused by the next tile
  }
}

template <class T>
__global__ void max_dim_thread_kernel(const T* x, T* out, int64_t* argmax, int64_t outer,
                                      int64_t dim, int64_t inner) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < outer * inner;
       k += stride) {
    const int64_t o = k / inner, i = k - o * inner;
    const T* p = x + o * dim * inner + i;
    acc_t<T> best = dev::to_acc(p[0]);
    int64_t best_d = 0;
    for (int64_t d = 1; d < dim; ++d) {
      const acc_t<T> v = dev::to_acc(p[d * inner]);
      if (dev::beats(v, d, best, best_d)) {
        best = v;
        best_d = d;
      }
    }
    out[k] = p[best_d * inner];
    argmax[k] = best_d;
  }
}

template <class T>
__global__ void max_dim_tile_kernel(const T* x, T* out, int64_t* argmax, int64_t outer, int64_t dim,
                                    int64_t inner, int64_t tiles) {
  using A = acc_t<T>;
  __shared__ A part_v[kTileThreads];
  __shared__ int64_t part_i[kTileThreads];
  const int tx = threadIdx.x, ty = threadIdx.y, nx = blockDim.x, ny = blockDim.y;
  for (int64_t t = blockIdx.x; t < outer * tiles; t += gridDim.x) {
    const int64_t o = t / tiles, i = (t - o * tiles) * nx + tx;
    A best = -INFINITY;
    int64_t best_d = INT64_MAX;  // loses to any element
    if (i < inner) {
      for (int64_t d = ty; d < dim; d += ny) {
        const A v = dev::to_acc(x[(o * dim + d) * inner + i]);
        if (dev::beats(v, d, best, best_d)) {
          best = v;
          best_d = d;
        }
      }
    }
    const int me = ty * nx + tx;
    part_v[me] = best;
    part_i[me] = best_d;
    __syncthreads();
    for (int h = ny / 2; h > 0; h /= 2) {
      const int other = me + h * nx;
      if (ty < h && dev::beats(part_v[other], part_i[other], part_v[me], part_i[me])) {
        part_v[me] = part_v[other];
        part_i[me] = part_i[other];
      }
      __syncthreads();
    }
    if (ty == 0 && i < inner) {
      const int64_t d = part_i[tx];
      out[o * inner + i] = x[(o * dim + d) * inner + i];
      argmax[o * inner + i] = d;
    }
    __syncthreads();
  }
}

// Tile shape: up to 32 inner positions across (coalesced), the rest of 256 threads down dim.
dim3 tile_block(int64_t inner) {
  int nx = 1;
  while (nx < 32 && nx < inner) nx *= 2;
  return dim3(static_cast<unsigned>(nx), static_cast<unsigned>(kTileThreads / nx));
}
// A thread per output when each output has few terms, or when there are enough outputs to
// fill the GPU and consecutive threads read consecutive addresses.
bool thread_per_output(int64_t outer, int64_t dim, int64_t inner) {
  return dim <= kShortDim || (inner >= 32 && outer * inner >= (1 << 16));
}

// Device scratch for sum_all's partials, from the caching allocator on the stream that uses it
// (freed right after the launches: the allocator hands it out again only on the same stream).
class Scratch {
 public:
  Scratch(size_t bytes, StreamHandle stream) {
    MLAI_CUDA_CHECK(cudaGetDevice(&device_));
    p_ = tensor::cuda_allocator(device_).allocate(bytes, stream);
  }
  ~Scratch() { tensor::cuda_allocator(device_).deallocate(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return p_; }

 private:
  int device_ = 0;
  void* p_ = nullptr;
};

}  // namespace

template <class T>
void sum_all(const T* x, int64_t n, double scale, T* out, StreamHandle stream) {
  using A = acc_t<T>;
  const bool vec = dev::aligned16(x);
  if (n <= kOneBlockMax) {  // n == 0 too: out = 0
    sum_final_kernel<T, T><<<1, kFinalThreads, 0, stream>>>(x, n, vec, scale, out);
    MLAI_LAUNCH_CHECK();
    return;
  }
  const int blocks = static_cast<int>(std::min<int64_t>(kMaxPartials, n / (dev::kBlock * 16)));
  Scratch partials(static_cast<size_t>(blocks) * sizeof(A), stream);
  A* part = static_cast<A*>(partials.get());
  sum_partials_kernel<T><<<blocks, dev::kBlock, 0, stream>>>(x, n, vec, part);
  MLAI_LAUNCH_CHECK();
  sum_final_kernel<A, T>
      <<<1, kFinalThreads, 0, stream>>>(part, blocks, dev::aligned16(part), scale, out);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void sum_dim(const T* x, T* out, int64_t outer, int64_t dim, int64_t inner, double scale,
             StreamHandle stream) {
  if (outer * inner <= 0) return;
  if (outer == 1 && inner == 1) return sum_all(x, dim, scale, out, stream);
  if (thread_per_output(outer, dim, inner)) {
    sum_dim_thread_kernel<T><<<dev::grid_size(outer * inner), dev::kBlock, 0, stream>>>(
        x, out, outer, dim, inner, scale);
  } else {
    const dim3 block = tile_block(inner);
    const int64_t tiles = (inner + block.x - 1) / block.x;
    sum_dim_tile_kernel<T><<<dev::grid_size(outer * tiles, 1), block, 0, stream>>>(
        x, out, outer, dim, inner, tiles, scale);
  }
  MLAI_LAUNCH_CHECK();
}

template <class T>
void max_dim(const T* x, T* out, int64_t* argmax, int64_t outer, int64_t dim, int64_t inner,
             StreamHandle stream) {
  if (outer * inner <= 0 || dim <= 0) return;  // the tensor layer rejects an empty dim
  if (thread_per_output(outer, dim, inner)) {
    max_dim_thread_kernel<T><<<dev::grid_size(outer * inner), dev::kBlock, 0, stream>>>(
        x, out, argmax, outer, dim, inner);
  } else {
    const dim3 block = tile_block(inner);
    const int64_t tiles = (inner + block.x - 1) / block.x;
    max_dim_tile_kernel<T><<<dev::grid_size(outer * tiles, 1), block, 0, stream>>>(
        x, out, argmax, outer, dim, inner, tiles);
  }
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                \
  template void sum_all<T>(const T*, int64_t, double, T*, StreamHandle);                   \
  template void sum_dim<T>(const T*, T*, int64_t, int64_t, int64_t, double, StreamHandle); \
  template void max_dim<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
