// PowerSGD compression of one gradient bucket (see powersgd.h).
#include "dist/powersgd.h"

#include <algorithm>
#include <cmath>

#include "tensor/ops.h"

namespace mlai::dist {

using tensor::Tensor;

namespace {
Tensor view(const Tensor& flat, int64_t offset, int64_t rows, int64_t cols) {
  return flat.slice(offset, offset + rows * cols).reshape({rows, cols});
}

// T with T P^T orthonormal rows, from G = P^T P (r x r, row-major): Gram-Schmidt on the
// coefficient vectors under G's inner product (Cholesky QR's L^-1). A column of P that is
// (numerically) a combination of the earlier ones, or zero, gets a zero row: P Q^T then simply
// leaves that direction out, where torch's Gram-Schmidt would divide by a zero norm.
std::vector<float> orthonormalizer(const float* g, int r) {
  std::vector<double> t(static_cast<size_t>(r * r), 0.0);
  double largest = 0;
  for (int i = 0; i < r; ++i) largest = std::max(largest, static_cast<double>(g[i * r + i]));
  auto inner = [&](const double* a, const double* b) {
    double s = 0;
    for (int i = 0; i < r; ++i)
      for (int j = 0; j < r; ++j) s += a[i] * static_cast<double>(g[i * r + j]) * b[j];
    return s;
  };
  for (int j = 0; j < r; ++j) {
    double* v = &t[static_cast<size_t>(j * r)];
    v[j] = 1.0;
    for (int pass = 0; pass < 2; ++pass)  // twice, for orthogonality in float data
      for (int k = 0; k < j; ++k) {
        const double* c = &t[static_cast<size_t>(k * r)];
        const double d = inner(v, c);
        for (int i = 0; i < r; ++i) v[i] -= d * c[i];
      }
    const double norm2 = inner(v, v);
    if (!(norm2 > 1e-12 * largest) || largest <= 0) {
      std::fill(v, v + r, 0.0);
      continue;
    }
    const double s = 1.0 / std::sqrt(norm2);
    for (int i = 0; i < r; ++i) v[i] *= s;
  }
  return std::vector<float>(t.begin(), t.end());
}
}  // namespace

PowerSgdBucket::PowerSgdBucket(const std::vector<Param>& params, int rank, uint64_t seed,
                               const tensor::Device& device)
    : r_(rank) {
  int64_t wire = 0, q = 0, tmp = 0;
  for (const Param& p : params) {
    int64_t numel = 1;
    for (int64_t d : p.shape) numel *= d;
    const int64_t n = p.shape.empty() ? 1 : p.shape[0], m = numel / std::max<int64_t>(n, 1);
    // torch's _should_compress: the factors at least 2x smaller than the matrix
    if (p.shape.size() >= 2 && (n + m) * r_ * 2 < n * m) {
      mats_.push_back({p.offset, n, m, 0, q, tmp});
      q += m * r_;
      tmp += n * r_;
    } else {
      plain_.push_back({p.offset, numel, wire});
      wire += numel;
    }
  }
  for (Matrix& mat : mats_) {
    mat.p_offset = wire;
    wire += mat.n * r_;
  }
  wire_ = Tensor::zeros({wire}, tensor::DType::kFloat32, device);
  q_ = Tensor::zeros({std::max<int64_t>(q, 1)}, tensor::DType::kFloat32, device);
  tmp_ = Tensor::zeros({std::max<int64_t>(tmp, 1)}, tensor::DType::kFloat32, device);
  gram_ = Tensor::zeros({std::max<int64_t>(static_cast<int64_t>(mats_.size()), 1), r_, r_},
                        tensor::DType::kFloat32, device);
  tensor::Generator gen(seed);
  if (q > 0) tensor::normal_(q_, 0.0, 1.0, gen);  // the same draws on every rank
}

void PowerSgdBucket::compress(Tensor& flat) {
  if (!error_.defined()) error_ = Tensor::zeros({flat.numel()}, flat.dtype(), flat.device());
  if (has_error_) tensor::axpy_(1.0, error_, flat);  // error feedback
  for (const Segment& s : plain_) {
    Tensor dst = wire_.slice(s.wire_offset, s.wire_offset + s.numel);
    dst.copy_from(flat.slice(s.offset, s.offset + s.numel));
  }
  for (const Matrix& mat : mats_) {  // P^T = Q^T M^T
    Tensor pt = view(wire_, mat.p_offset, r_, mat.n);
    tensor::gemm_(view(q_, mat.q_offset, mat.m, r_), view(flat, mat.offset, mat.n, mat.m), pt, true,
                  true, 1.0, 0.0);
  }
}

void PowerSgdBucket::decompress(Tensor& flat, Communicator& comm) {
  for (const Segment& s : plain_) {
    Tensor dst = flat.slice(s.offset, s.offset + s.numel);
    dst.copy_from(wire_.slice(s.wire_offset, s.wire_offset + s.numel));
  }
  if (!mats_.empty()) {
    // The summed P's Gram matrices to the host, their orthonormalizers back (one copy each way).
    for (size_t i = 0; i < mats_.size(); ++i) {
      Tensor pt = view(wire_, mats_[i].p_offset, r_, mats_[i].n);
      Tensor g =
          gram_.slice(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).reshape({r_, r_});
      tensor::gemm_(pt, pt, g, false, true, 1.0, 0.0);
    }
    const std::vector<float> grams = gram_.to(tensor::Device::cpu()).to_vector<float>();
    // A rank's gradient had an inf or nan (an fp16 overflow, whose step the loss scaler skips):
    // the summed P's, so the Gram matrices, are not finite, the same on every rank. Q and the
    // errors stay as they were, for the next step, and every rank gets nan matrices, so that
    // every rank's scaler sees the overflow (a rank with finite gradients of its own too).
    if (!std::all_of(grams.begin(), grams.end(), [](float v) { return std::isfinite(v); })) {
      for (const Matrix& mat : mats_) {
        Tensor m = view(flat, mat.offset, mat.n, mat.m);
        tensor::fill_(m, std::nan(""));
      }
      return;
    }
    std::vector<float> ts;
    for (size_t i = 0; i < mats_.size(); ++i) {
      const std::vector<float> t = orthonormalizer(&grams[i * static_cast<size_t>(r_ * r_)], r_);
      ts.insert(ts.end(), t.begin(), t.end());
    }
    const Tensor t_all =
        Tensor::from_vector(ts, {static_cast<int64_t>(mats_.size()), r_, r_}).to(flat.device());
    for (size_t i = 0; i < mats_.size(); ++i) {
      const Matrix& mat = mats_[i];
      Tensor p = view(tmp_, mat.t_offset, r_, mat.n);  // orthonormal P^T = T P^T
      tensor::gemm_(
          t_all.slice(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).reshape({r_, r_}),
          view(wire_, mat.p_offset, r_, mat.n), p, false, false, 1.0, 0.0);
      Tensor q = view(q_, mat.q_offset, mat.m, r_);  // Q = M^T P
      tensor::gemm_(view(flat, mat.offset, mat.n, mat.m), p, q, true, true, 1.0, 0.0);
    }
    comm.allreduce_sum(q_);
    const double mean = 1.0 / comm.world();
    for (const Matrix& mat : mats_) {
      Tensor m = view(flat, mat.offset, mat.n, mat.m);  // still this rank's input
      const Tensor p = view(tmp_, mat.t_offset, r_, mat.n), q = view(q_, mat.q_offset, mat.m, r_);
      // This rank's error: its input less the mean approximation, (P Q^T) / world. (torch's
      // hook also keeps one for the values summed as they are: their ranks' errors add up to
      // zero, so it only moves rounding between ranks; here it is 0.)
      Tensor e = view(error_, mat.offset, mat.n, mat.m);
      e.copy_from(m);
      tensor::gemm_(p, q, e, true, true, -mean, 1.0);
      tensor::gemm_(p, q, m, true, true, 1.0, 0.0);  // the sum's approximation: P Q^T
    }
    has_error_ = true;
  }
}

}  // namespace mlai::dist
