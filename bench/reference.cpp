// Float64 references for the benchmark checks (see reference.h). Inputs are read back exactly
// (fp16/bf16 widen to double without rounding), so the only error measured is the kernel's.
#include "bench/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>
#include <vector>

#include "bench/bench_util.h"
#include "tensor/ops.h"

namespace mlai::bench {

using tensor::Device;
using tensor::DType;
using tensor::Tensor;

namespace {

std::string verdict(const char* what, double err, double tol) {
  if (err <= tol) return "";  // NaN fails this comparison too
  std::ostringstream os;
  os << what << ": error " << err << " > tolerance " << tol;
  return os.str();
}

}  // namespace

double default_tol(DType dt) {
  switch (dt) {
    case DType::kFloat64:
      return 1e-12;
    case DType::kFloat16:
      return 2e-3;  // 2^-11 rounding of the result
    case DType::kBFloat16:
      return 1e-2;  // 2^-8 rounding of the result
    default:
      return 1e-5;
  }
}

std::string check_gemm(const Tensor& a, const Tensor& b, const Tensor& c, double tol) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  // B once on the host as float32 (exact for every dtype benchmarked), rows of A and C as needed.
  const Tensor bh = b.to(Device::cpu()).to(DType::kFloat32);
  const float* bp = bh.data<float>();
  const std::set<int64_t> rows = {0, m / 3, (2 * m) / 3, m - 1};
  std::vector<double> out, ref;
  for (int64_t i : rows) {
    const std::vector<double> ai = a.slice(i, i + 1).to_double_vector();
    const std::vector<double> ci = c.slice(i, i + 1).to_double_vector();
    std::vector<double> ri(static_cast<size_t>(n), 0.0);
    for (int64_t kk = 0; kk < k; ++kk) {
      const double av = ai[static_cast<size_t>(kk)];
      const float* brow = bp + kk * n;
      for (int64_t j = 0; j < n; ++j) ri[static_cast<size_t>(j)] += av * brow[j];
    }
    out.insert(out.end(), ci.begin(), ci.end());
    ref.insert(ref.end(), ri.begin(), ri.end());
  }
  return verdict("gemm (sampled rows)", rel_l2_error(out, ref), tol);
}

std::string check_elementwise(const Tensor& a, const Tensor& b, const Tensor& out, double tol) {
  std::vector<double> ref = a.to_double_vector();
  if (b.defined()) {
    const std::vector<double> bv = b.to_double_vector();
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += bv[i];
  } else {
    for (double& v : ref) v = std::max(v, 0.0);
  }
  return verdict(b.defined() ? "add" : "relu", rel_l2_error(out.to_double_vector(), ref), tol);
}

std::string check_sum(const Tensor& x, const Tensor& out, double tol) {
  const std::vector<double> xv = x.to_double_vector();
  double s = 0, abs_s = 0;
  for (double v : xv) {
    s += v;
    abs_s += std::fabs(v);
  }
  const double err = std::fabs(out.item() - s) / std::max(abs_s, 1e-300);
  return verdict("sum", std::isnan(out.item()) ? INFINITY : err, tol);
}

namespace {
// Per-row log-sum-exp of a [rows, classes] host array.
std::vector<double> row_lse(const std::vector<double>& x, int64_t rows, int64_t classes) {
  std::vector<double> lse(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * classes;
    const double mx = *std::max_element(xr, xr + classes);
    double s = 0;
    for (int64_t c = 0; c < classes; ++c) s += std::exp(xr[c] - mx);
    lse[static_cast<size_t>(r)] = mx + std::log(s);
  }
  return lse;
}
}  // namespace

std::string check_xent_forward(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                               double tol) {
  const int64_t rows = logits.size(0), classes = logits.size(1);
  const std::vector<double> x = logits.to_double_vector();
  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  const std::vector<double> lse = row_lse(x, rows, classes);
  std::vector<double> ref(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    ref[static_cast<size_t>(r)] = lse[static_cast<size_t>(r)] -
                                  x[static_cast<size_t>(r * classes + y[static_cast<size_t>(r)])];
  return verdict("softmax_xent_forward", rel_l2_error(loss.to_double_vector(), ref), tol);
}

std::string check_xent_backward(const Tensor& logits, const Tensor& labels, double scale,
                                const Tensor& dlogits, double tol) {
  const int64_t rows = logits.size(0), classes = logits.size(1);
  const std::vector<double> x = logits.to_double_vector();
  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  const std::vector<double> lse = row_lse(x, rows, classes);
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < classes; ++c) {
      const size_t i = static_cast<size_t>(r * classes + c);
      const double onehot = c == y[static_cast<size_t>(r)] ? 1.0 : 0.0;
      ref[i] = scale * (std::exp(x[i] - lse[static_cast<size_t>(r)]) - onehot);
    }
  }
  return verdict("softmax_xent_backward", rel_l2_error(dlogits.to_double_vector(), ref), tol);
}

std::string check_cast(const Tensor& x, const Tensor& out) {
  const Tensor ref = tensor::cast(x.to(Device::cpu()), out.dtype());
  const Tensor got = out.to(Device::cpu());
  const size_t es = tensor::dtype_size(out.dtype());
  const auto* rp = static_cast<const unsigned char*>(ref.data_ptr());
  const auto* gp = static_cast<const unsigned char*>(got.data_ptr());
  if (std::memcmp(rp, gp, ref.nbytes()) == 0) return "";
  int64_t bad = 0;
  for (int64_t i = 0; i < ref.numel(); ++i)
    bad +=
        std::memcmp(rp + i * static_cast<int64_t>(es), gp + i * static_cast<int64_t>(es), es) != 0;
  return "cast: " + std::to_string(bad) + " of " + std::to_string(ref.numel()) +
         " elements differ from the CPU twin";
}

}  // namespace mlai::bench
