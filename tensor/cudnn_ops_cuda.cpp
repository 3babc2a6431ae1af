// cuDNN convolution, max pooling and batch norm through the legacy descriptor API (see
// cudnn_ops.h). Descriptors are built per call (host-only, microseconds); what is expensive, the
// convolution algorithm search, runs once per shape and is cached.
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/gemm.h"
#include "tensor/allocator.h"
#include "tensor/cuda_graph.h"
#include "tensor/cudnn_ops.h"
#include "tensor/determinism.h"
#include "tensor/handles.h"
#include "tensor/stream.h"

namespace mlai::tensor::cudnn {

namespace {

using kernels::Conv2dGeometry;
using kernels::Pool2dGeometry;

cudnnDataType_t cudnn_dtype(DType dt) {
  switch (dt) {
    case DType::kFloat32:
      return CUDNN_DATA_FLOAT;
    case DType::kFloat64:
      return CUDNN_DATA_DOUBLE;
    case DType::kFloat16:
      return CUDNN_DATA_HALF;
    case DType::kBFloat16:
      return CUDNN_DATA_BFLOAT16;
    default:
      throw_bad_dtype("cuDNN", dt);
  }
}
bool is_half(DType dt) { return dt == DType::kFloat16 || dt == DType::kBFloat16; }

int to_int(int64_t v, const char* op) {
  if (v > INT_MAX)
    throw std::invalid_argument(std::string(op) + ": size " + std::to_string(v) +
                                " is beyond cuDNN's 32-bit dimensions");
  return static_cast<int>(v);
}

// alpha = 1 and beta = 0 (overwrite the output): double for double data, float otherwise.
struct Blend {
  explicit Blend(DType dt) : dbl_(dt == DType::kFloat64) {}
  const void* one() const { return dbl_ ? static_cast<const void*>(&d1_) : &f1_; }
  const void* zero() const { return dbl_ ? static_cast<const void*>(&d0_) : &f0_; }

 private:
  bool dbl_;
  float f1_ = 1, f0_ = 0;
  double d1_ = 1, d0_ = 0;
};

template <class T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class Desc {
 public:
  Desc() { MLAI_CUDNN_CHECK(Create(&d_)); }
  ~Desc() { (void)Destroy(d_); }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  T get() const { return d_; }

 private:
  T d_ = nullptr;
};
using TensorDesc =
    Desc<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc =
    Desc<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc = Desc<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                      cudnnDestroyConvolutionDescriptor>;
using PoolDesc =
    Desc<cudnnPoolingDescriptor_t, cudnnCreatePoolingDescriptor, cudnnDestroyPoolingDescriptor>;

void set_nhwc(const TensorDesc& d, DType dt, int64_t n, int64_t h, int64_t w, int64_t c,
              const char* op) {
  to_int(n * h * w * c, op);  // the legacy API indexes elements with 32-bit strides too
  MLAI_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.get(), CUDNN_TENSOR_NHWC, cudnn_dtype(dt),
                                              to_int(n, op), to_int(c, op), to_int(h, op),
                                              to_int(w, op)));
}

// The device's one cuDNN handle, made current-stream-bound for the length of one call. The
// handle is shared by every thread of the process, so binding its stream and enqueueing on it
// happen under one lock (a handle has a single stream slot).
class Session {
 public:
  explicit Session(const Device& d)
      : guard_(d.index),
        lock_(mutex()),
        handle_(cudnn_handle(d.index)),
        stream_(current_stream(d).handle()) {
    MLAI_CUDNN_CHECK(cudnnSetStream(handle_, stream_));
  }
  cudnnHandle_t handle() const { return handle_; }
  StreamHandle stream() const { return stream_; }

 private:
  static std::mutex& mutex() {
    static std::mutex mu;
    return mu;
  }
  kernels::detail::DeviceGuard guard_;
  std::lock_guard<std::mutex> lock_;
  cudnnHandle_t handle_;
  StreamHandle stream_;
};

// Scratch memory from the device's caching allocator on the call's stream. Freed right after the
// call is enqueued: the block goes back to that stream's free list, so the next user of the block
// is ordered after this call by the stream itself.
class Workspace {
 public:
  Workspace(int device, size_t bytes, StreamHandle stream) : device_(device), bytes_(bytes) {
    if (bytes_ > 0) ptr_ = cuda_allocator(device_).allocate(bytes_, stream);
  }
  ~Workspace() {
    if (ptr_ != nullptr) cuda_allocator(device_).deallocate(ptr_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  int device_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// ---- convolution --------------------------------------------------------------------------------

// Largest workspace offered to the algorithm search: enough for every algorithm ResNet shapes
// ask for, small enough not to push a nearly full device out of memory.
constexpr size_t kMaxSearchWorkspace = size_t{1} << 30;

enum class ConvOp { kForward, kBackwardData, kBackwardFilter };
const char* conv_op_name(ConvOp op) {
  switch (op) {
    case ConvOp::kForward:
      return "conv2d";
    case ConvOp::kBackwardData:
      return "conv2d backward data";
    default:
      return "conv2d backward filter";
  }
}

// An algorithm timed on 256-byte-aligned buffers may need that alignment (vectorized loads), so
// the key holds the operands' common alignment too: a view at an odd offset gets a search of its
// own instead of a choice that cuDNN would refuse or run wrongly.
struct AlgoKey {
  ConvOp op;
  int device;
  DType dtype;
  int64_t n, h, w, c_in, c_out, kh, kw, stride, pad;
  int64_t groups;
  int alignment;
  bool deterministic;
  bool heuristic;  // --cudnn-benchmark false (or deterministic): cuDNN's heuristic, untimed
  bool tf32;  // float32 data on TF32 tensor cores (--float32-matmul-precision high or medium)
  auto operator<=>(const AlgoKey&) const = default;
};
struct AlgoChoice {
  int algo;
  cudnnMathType_t math;
  size_t workspace;
};

// Whether float32 convolutions may use TF32 tensor cores (kernels::float32_matmul_precision).
bool tf32_allowed(DType dt) {
  return dt == DType::kFloat32 &&
         kernels::float32_matmul_precision() != kernels::MatmulPrecision::kHighest;
}

// The descriptors of one convolution. Math: float64, and float32 by default, use
// CUDNN_FMA_MATH, i.e. no TF32 tensor cores, so results match the CPU to float tolerance (TF32
// keeps 10 mantissa bits); half and bf16 use tensor cores (CUDNN_TENSOR_OP_MATH), accumulating
// in float (the compute type) like the CPU twin. Float32 where the matmul precision allows TF32
// uses CUDNN_DEFAULT_MATH, which on Ampere and newer permits TF32 tensor cores (what PyTorch
// sets under torch.backends.cudnn.allow_tf32).
struct ConvDescs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  cudnnMathType_t math;
  ConvDescs(DType dt, const Conv2dGeometry& g, const char* op) {
    set_nhwc(x, dt, g.n, g.h, g.w, g.c_in, op);
    set_nhwc(y, dt, g.n, g.out_h(), g.out_w(), g.c_out, op);
    // A grouped filter holds c_in / groups input channels (torch's and cuDNN's convention).
    MLAI_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w.get(), cudnn_dtype(dt), CUDNN_TENSOR_NHWC,
                                                to_int(g.c_out, op), to_int(g.group_in(), op),
                                                to_int(g.kh, op), to_int(g.kw, op)));
    const int p = to_int(g.pad, op), s = to_int(g.stride, op);
    const cudnnDataType_t compute = dt == DType::kFloat64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    MLAI_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.get(), p, p, s, s, 1, 1,
                                                     CUDNN_CROSS_CORRELATION, compute));
    MLAI_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.get(), to_int(g.groups, op)));
    math = is_half(dt)          ? CUDNN_TENSOR_OP_MATH
           : tf32_allowed(dt) ? CUDNN_DEFAULT_MATH
                              : CUDNN_FMA_MATH;
    MLAI_CUDNN_CHECK(cudnnSetConvolutionMathType(conv.get(), math));
  }
};

std::mutex& cache_mutex() {
  static std::mutex mu;
  return mu;
}
std::map<AlgoKey, AlgoChoice>& algo_cache() {
  static std::map<AlgoKey, AlgoChoice> cache;
  return cache;
}

// The fastest successful result (cuDNN sorts them by time) that the mode allows.
template <class Perf>
AlgoChoice pick(const Perf* perf, int count, const AlgoKey& key, cudnnMathType_t wanted) {
  for (int i = 0; i < count; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    if (key.deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    if (p.memory > kMaxSearchWorkspace) continue;  // (heuristic results are not sized to fit)
    const bool tensor_ops =
        p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    if (tensor_ops && wanted == CUDNN_FMA_MATH) continue;  // no TF32 unless allowed
    // Half/bf16 (and float32 allowed TF32) run with the math type the result was timed with
    // (an algorithm without a tensor-op kernel reports the default). Otherwise float32/64 stay
    // on FMA: CUDNN_DEFAULT_MATH would let cuDNN use TF32 on Ampere and newer.
    return {static_cast<int>(p.algo), wanted == CUDNN_FMA_MATH ? wanted : p.mathType, p.memory};
  }
  throw std::runtime_error(
      std::string(conv_op_name(key.op)) + ": cuDNN has no " +
      (key.deterministic ? "deterministic " : "") + "algorithm for " + dtype_name(key.dtype) +
      " input [" + std::to_string(key.n) + ", " + std::to_string(key.h) + ", " +
      std::to_string(key.w) + ", " + std::to_string(key.c_in) + "] with a " +
      std::to_string(key.kh) + "x" + std::to_string(key.kw) + " filter" +
      (key.groups == 1 ? "" : " in " + std::to_string(key.groups) + " groups"));
}

// Scratch for the search: the most any algorithm asks for (up to kMaxSearchWorkspace), halved
// while the device cannot supply it; algorithms that need more than they get are left out.
std::unique_ptr<Workspace> search_workspace(const Session& s, int device, size_t wanted) {
  size_t bytes = std::min(wanted, kMaxSearchWorkspace);
  for (;;) {
    try {
      return std::make_unique<Workspace>(device, bytes, s.stream());
    } catch (const std::runtime_error&) {
      if (bytes < (size_t{1} << 20)) throw;
      bytes /= 2;
    }
  }
}

// Looks the algorithm up, or asks cuDNN once per shape: by timing every algorithm
// (cudnnFind*Ex, like torch.backends.cudnn.benchmark; it writes into the op's output, which
// the call that follows overwrites anyway), or by cuDNN's heuristic (cudnnGet*_v7) under
// --cudnn-benchmark false and under --deterministic: timings differ from process to process,
// so a timed choice among the deterministic algorithms could differ between two runs, and
// with it the bits. Called with
// the Session held. find(workspace, bytes, heuristic) returns the choice.
template <class GetWs, class Find>
AlgoChoice choose(const AlgoKey& key, const Session& s, int algo_count, GetWs get_ws, Find find) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    auto it = algo_cache().find(key);
    if (it != algo_cache().end()) return it->second;
  }
  // A search runs kernels and waits for them: impossible while a CUDA graph is being captured.
  if (capturing(Device::cuda(key.device)))
    throw std::runtime_error(std::string(conv_op_name(key.op)) +
                             ": a convolution shape first seen while capturing a CUDA graph "
                             "(--cuda-graphs captures after warm-up steps of the same shapes)");
  AlgoChoice c{};
  if (key.heuristic) {
    c = find(nullptr, 0, true);
  } else {
    size_t wanted = 0;
    for (int a = 0; a < algo_count; ++a) {
      size_t b = 0;
      if (get_ws(a, &b) == CUDNN_STATUS_SUCCESS) wanted = std::max(wanted, b);
    }
    auto ws = search_workspace(s, key.device, wanted);
    c = find(ws->get(), ws->bytes(), false);
  }
  std::lock_guard<std::mutex> lock(cache_mutex());
  algo_cache()[key] = c;
  return c;
}

// The largest power of two up to 256 that divides every operand's address.
int common_alignment(std::initializer_list<const void*> ptrs) {
  uintptr_t bits = 256;
  for (const void* p : ptrs) bits |= reinterpret_cast<uintptr_t>(p);
  return static_cast<int>(bits & (~bits + 1));  // lowest set bit
}

AlgoKey make_key(ConvOp op, const Conv2dGeometry& g, const Tensor& a, const Tensor& b,
                 const Tensor& out) {
  AlgoKey k{op,
            a.device().index,
            a.dtype(),
            g.n,
            g.h,
            g.w,
            g.c_in,
            g.c_out,
            g.kh,
            g.kw,
            g.stride,
            g.pad,
            g.groups,
            0,
            deterministic(),
            deterministic() || !cudnn_benchmark(),
            tf32_allowed(a.dtype())};
  k.alignment = common_alignment({a.data_ptr(), b.data_ptr(), out.data_ptr()});
  return k;
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, Tensor& y, const Conv2dGeometry& g) {
  const char* op = "conv2d";
  const DType dt = x.dtype();
  ConvDescs d(dt, g, op);
  Session s(x.device());
  const AlgoKey key = make_key(ConvOp::kForward, g, x, w, y);
  const AlgoChoice c = choose(
      key, s, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
      [&](int a, size_t* b) {
        return cudnnGetConvolutionForwardWorkspaceSize(
            s.handle(), d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
            static_cast<cudnnConvolutionFwdAlgo_t>(a), b);
      },
      [&](void* ws, size_t bytes, bool heuristic) {
        int max = 0;
        MLAI_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(s.handle(), &max));
        std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max, 1)));
        int n = 0;
        if (heuristic) {
          MLAI_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
              s.handle(), d.x.get(), d.w.get(), d.conv.get(), d.y.get(), max, &n, perf.data()));
        } else {
          MLAI_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
              s.handle(), d.x.get(), x.data_ptr(), d.w.get(), w.data_ptr(), d.conv.get(), d.y.get(),
              y.data_ptr(), max, &n, perf.data(), ws, bytes));
        }
        return pick(perf.data(), n, key, d.math);
      });
  MLAI_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.get(), c.math));
  Workspace ws(x.device().index, c.workspace, s.stream());
  const Blend b(dt);
  MLAI_CUDNN_CHECK(cudnnConvolutionForward(s.handle(), b.one(), d.x.get(), x.data_ptr(), d.w.get(),
                                           w.data_ptr(), d.conv.get(),
                                           static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws.get(),
                                           ws.bytes(), b.zero(), d.y.get(), y.data_ptr()));
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dGeometry& g) {
  const DType dt = dy.dtype();
  ConvDescs d(dt, g, "conv2d backward data");
  Session s(dy.device());
  const AlgoKey key = make_key(ConvOp::kBackwardData, g, dy, w, dx);
  const AlgoChoice c = choose(
      key, s, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
      [&](int a, size_t* b) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            s.handle(), d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
            static_cast<cudnnConvolutionBwdDataAlgo_t>(a), b);
      },
      [&](void* ws, size_t bytes, bool heuristic) {
        int max = 0;
        MLAI_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(s.handle(), &max));
        std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(std::max(max, 1)));
        int n = 0;
        if (heuristic) {
          MLAI_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
              s.handle(), d.w.get(), d.y.get(), d.conv.get(), d.x.get(), max, &n, perf.data()));
        } else {
          MLAI_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
              s.handle(), d.w.get(), w.data_ptr(), d.y.get(), dy.data_ptr(), d.conv.get(),
              d.x.get(), dx.data_ptr(), max, &n, perf.data(), ws, bytes));
        }
        return pick(perf.data(), n, key, d.math);
      });
  MLAI_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.get(), c.math));
  Workspace ws(dy.device().index, c.workspace, s.stream());
  const Blend b(dt);
  MLAI_CUDNN_CHECK(cudnnConvolutionBackwardData(
      s.handle(), b.one(), d.w.get(), w.data_ptr(), d.y.get(), dy.data_ptr(), d.conv.get(),
      static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws.get(), ws.bytes(), b.zero(), d.x.get(),
      dx.data_ptr()));
}

void conv2d_backward_filter(const Tensor& x, const Tensor& dy, Tensor& dw,
                            const Conv2dGeometry& g) {
  const char* op = "conv2d backward filter";
  const DType dt = x.dtype();
  ConvDescs d(dt, g, op);
  Session s(x.device());
  const AlgoKey key = make_key(ConvOp::kBackwardFilter, g, x, dy, dw);
  const AlgoChoice c = choose(
      key, s, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
      [&](int a, size_t* b) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            s.handle(), d.x.get(), d.y.get(), d.conv.get(), d.w.get(),
            static_cast<cudnnConvolutionBwdFilterAlgo_t>(a), b);
      },
      [&](void* ws, size_t bytes, bool heuristic) {
        int max = 0;
        MLAI_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(s.handle(), &max));
        std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(
            static_cast<size_t>(std::max(max, 1)));
        int n = 0;
        if (heuristic) {
          MLAI_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
              s.handle(), d.x.get(), d.y.get(), d.conv.get(), d.w.get(), max, &n, perf.data()));
        } else {
          MLAI_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
              s.handle(), d.x.get(), x.data_ptr(), d.y.get(), dy.data_ptr(), d.conv.get(),
              d.w.get(), dw.data_ptr(), max, &n, perf.data(), ws, bytes));
        }
        return pick(perf.data(), n, key, d.math);
      });
  MLAI_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.get(), c.math));
  Workspace ws(x.device().index, c.workspace, s.stream());
  const Blend b(dt);
  MLAI_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
      s.handle(), b.one(), d.x.get(), x.data_ptr(), d.y.get(), dy.data_ptr(), d.conv.get(),
      static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws.get(), ws.bytes(), b.zero(),
      d.w.get(), dw.data_ptr()));
}

// ---- max pooling --------------------------------------------------------------------------------

namespace {
// MAX_DETERMINISTIC in both directions: the backward then routes each gradient reproducibly
// (the plain MAX backward may use atomics). PROPAGATE_NAN: the CPU twin lets nan win a window,
// as PyTorch does. cuDNN leaves padding out of the window, which is PyTorch's -inf padding.
struct PoolDescs {
  TensorDesc x, y;
  PoolDesc pool;
  PoolDescs(DType dt, const Pool2dGeometry& g, const char* op) {
    set_nhwc(x, dt, g.n, g.h, g.w, g.c, op);
    set_nhwc(y, dt, g.n, g.out_h(), g.out_w(), g.c, op);
    const int k = to_int(g.k, op), p = to_int(g.pad, op), s = to_int(g.stride, op);
    MLAI_CUDNN_CHECK(cudnnSetPooling2dDescriptor(pool.get(), CUDNN_POOLING_MAX_DETERMINISTIC,
                                                 CUDNN_PROPAGATE_NAN, k, k, p, p, s, s));
  }
};
}  // namespace

void maxpool2d_forward(const Tensor& x, Tensor& y, const Pool2dGeometry& g) {
  PoolDescs d(x.dtype(), g, "maxpool2d");
  Session s(x.device());
  const Blend b(x.dtype());
  MLAI_CUDNN_CHECK(cudnnPoolingForward(s.handle(), d.pool.get(), b.one(), d.x.get(), x.data_ptr(),
                                       b.zero(), d.y.get(), y.data_ptr()));
}

void maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, Tensor& dx,
                        const Pool2dGeometry& g) {
  PoolDescs d(x.dtype(), g, "maxpool2d backward");
  Session s(x.device());
  const Blend b(x.dtype());
  MLAI_CUDNN_CHECK(cudnnPoolingBackward(s.handle(), d.pool.get(), b.one(), d.y.get(), y.data_ptr(),
                                        d.y.get(), dy.data_ptr(), d.x.get(), x.data_ptr(), b.zero(),
                                        d.x.get(), dx.data_ptr()));
}

// ---- batch norm ---------------------------------------------------------------------------------

namespace {
// SPATIAL, not SPATIAL_PERSISTENT: the persistent kernels are faster for NHWC half but cuDNN
// documents that they may overflow for some inputs; SPATIAL matches the CPU twin in every case.
constexpr cudnnBatchNormMode_t kBnMode = CUDNN_BATCHNORM_SPATIAL;

// x as NHWC: its real n, h, w for 4-D input, [rows, 1, 1, c] for anything else channels-last
// (the same memory either way). The parameter descriptor is derived from it: [1, c, 1, 1] in
// float for half/bf16 x, x's dtype otherwise.
struct BnDescs {
  TensorDesc x, param;
  BnDescs(const Tensor& t, const char* op) {
    const int64_t c = t.size(-1);
    if (t.ndim() == 4)
      set_nhwc(x, t.dtype(), t.size(0), t.size(1), t.size(2), c, op);
    else
      set_nhwc(x, t.dtype(), t.numel() / c, 1, 1, c, op);
    MLAI_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(param.get(), x.get(), kBnMode));
  }
};
void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
}  // namespace

// cuDNN's statistics are the CPU kernel's: saved inv std = 1/sqrt(biased var + eps), running
// var updated with the unbiased variance, running = (1 - factor) * running + factor * batch.
void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                             Tensor& running_mean, Tensor& running_var, Tensor& save_mean,
                             Tensor& save_inv_std, double momentum, double eps) {
  BnDescs d(x, "batchnorm");
  Session s(x.device());
  const Blend b(x.dtype());
  MLAI_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
      s.handle(), kBnMode, b.one(), b.zero(), d.x.get(), x.data_ptr(), d.x.get(), y.data_ptr(),
      d.param.get(), gamma.data_ptr(), beta.data_ptr(), momentum, ptr_or_null(running_mean),
      ptr_or_null(running_var), eps, save_mean.data_ptr(), save_inv_std.data_ptr()));
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                            double eps) {
  BnDescs d(x, "batchnorm");
  Session s(x.device());
  const Blend b(x.dtype());
  MLAI_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
      s.handle(), kBnMode, b.one(), b.zero(), d.x.get(), x.data_ptr(), d.x.get(), y.data_ptr(),
      d.param.get(), gamma.data_ptr(), beta.data_ptr(), running_mean.data_ptr(),
      running_var.data_ptr(), eps));
}

void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                        const Tensor& save_mean, const Tensor& save_inv_std, Tensor& dx,
                        Tensor& dgamma, Tensor& dbeta) {
  BnDescs d(x, "batchnorm backward");
  Session s(x.device());
  const Blend b(x.dtype());
  // With the saved statistics given, cuDNN does not recompute the variance, so epsilon is not
  // used; it must only be a valid value (>= CUDNN_BN_MIN_EPSILON).
  constexpr double kUnusedEps = 1e-5;
  MLAI_CUDNN_CHECK(cudnnBatchNormalizationBackward(
      s.handle(), kBnMode, b.one(), b.zero(), b.one(), b.zero(), d.x.get(), x.data_ptr(), d.x.get(),
      dy.data_ptr(), d.x.get(), dx.data_ptr(), d.param.get(), gamma.data_ptr(), dgamma.data_ptr(),
      dbeta.data_ptr(), kUnusedEps, save_mean.data_ptr(), save_inv_std.data_ptr()));
}

}  // namespace mlai::tensor::cudnn
