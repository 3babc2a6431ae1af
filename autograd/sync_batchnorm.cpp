// Cross-rank batch norm (PyTorch's SyncBatchNorm) from tensor ops, so one code path serves MPI
// and NCCL: statistics of the global batch, combined in float64 by the caller's allreduce.
#include <stdexcept>
#include <string>

#include "autograd/ops.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
// Per-channel values as [rows, c] (the broadcast of a [c] vector over the rows).
Tensor over_rows(const Tensor& v, int64_t rows) {
  return t::broadcast_dim(v.reshape({1, v.numel()}), {rows, v.numel()}, 0);
}

// 1 / sqrt(var + eps) per channel, through the evaluation kernel (CPU or cuDNN): normalising
// mean + 1 with unit gamma and zero beta gives exactly that, with no host round trip.
Tensor inv_std_of(const Tensor& mean, const Tensor& var, double eps) {
  const int64_t c = mean.numel();
  const Tensor ones = Tensor::full({c}, 1.0, mean.dtype(), mean.device());
  const Tensor zeros = Tensor::zeros({c}, mean.dtype(), mean.device());
  return t::batchnorm_eval(t::add(mean, ones).reshape({1, c}), ones, zeros, mean, var, eps)
      .reshape({c});
}

struct SyncBatchNormNode : Node {
  Tensor x, gamma, mean, var;  // mean, var: the global batch's (biased), parameter dtype
  double eps = 1e-5;
  double count = 1;  // rows in the global batch
  SumOverRanks sum_over_ranks;
  std::vector<Tensor> backward(const Tensor& g) override {
    const int64_t c = x.size(-1), rows = x.numel() / c;
    const tensor::DType pd = gamma.dtype();  // float32 for half x, else x's dtype
    const Tensor ones = Tensor::full({c}, 1.0, pd, x.device());
    const Tensor zeros = Tensor::zeros({c}, pd, x.device());
    const Tensor xhat = t::batchnorm_eval(x.reshape({rows, c}).to(pd), ones, zeros, mean, var, eps);
    const Tensor dy = g.reshape({rows, c}).to(pd);
    const Tensor sum_dy = t::sum_dim(dy, 0), sum_dy_xhat = t::sum_dim(t::mul(dy, xhat), 0);
    Tensor dx;
    if (inputs[0]) {
      // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)), means over the
      // global batch: the two sums travel in one allreduce.
      Tensor both = Tensor::empty({2 * c}, pd, x.device());
      both.slice(0, c).copy_from(sum_dy);
      both.slice(c, 2 * c).copy_from(sum_dy_xhat);
      sum_over_ranks(both);
      const Tensor mean_dy = t::scale(both.slice(0, c), 1.0 / count);
      const Tensor mean_dy_xhat = t::scale(both.slice(c, 2 * c), 1.0 / count);
      const Tensor k = t::mul(gamma, inv_std_of(mean, var, eps));
      const Tensor centred =
          t::sub(t::sub(dy, over_rows(mean_dy, rows)), t::mul(xhat, over_rows(mean_dy_xhat, rows)));
      dx = t::mul(centred, over_rows(k, rows)).to(x.dtype()).reshape(x.shape());
    }
    return {dx, inputs[1] ? sum_dy_xhat : Tensor(), inputs[2] ? sum_dy : Tensor()};
  }
  const char* name() const override { return "SyncBatchNormBackward"; }
};
}  // namespace

Variable sync_batchnorm(const Variable& x, const Variable& gamma, const Variable& beta,
                        Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                        int world, const SumOverRanks& sum_over_ranks) {
  if (world < 1 || !sum_over_ranks)
    throw std::invalid_argument("sync_batchnorm: needs the world size and an allreduce");
  const Tensor& xd = x.data();
  if (xd.ndim() < 2 || gamma.data().ndim() != 1 || gamma.size(0) != xd.size(-1))
    throw std::invalid_argument("sync_batchnorm: input " + xd.str() + " with parameters " +
                                gamma.data().str());
  const int64_t c = xd.size(-1), rows = xd.numel() / c;
  const tensor::DType pd = gamma.data().dtype();
  const tensor::Device dev = xd.device();
  // Per rank, two passes (mean, then squared deviations: no cancellation in float), then in
  // float64 the sums that combine across ranks: n*m and M2 + n*m^2, and n itself.
  const Tensor xa = xd.reshape({rows, c}).to(pd);
  const Tensor m = t::scale(t::sum_dim(xa, 0), 1.0 / static_cast<double>(rows));
  const Tensor dev_x = t::sub(xa, over_rows(m, rows));
  const Tensor m2 = t::sum_dim(t::mul(dev_x, dev_x), 0).to(tensor::DType::kFloat64);
  const Tensor md = m.to(tensor::DType::kFloat64);
  Tensor stats = Tensor::empty({2 * c + 1}, tensor::DType::kFloat64, dev);
  stats.slice(0, c).copy_from(t::scale(md, static_cast<double>(rows)));
  stats.slice(c, 2 * c).copy_from(t::add(m2, t::scale(t::mul(md, md), static_cast<double>(rows))));
  Tensor n = stats.slice(2 * c, 2 * c + 1);
  t::fill_(n, static_cast<double>(rows));
  sum_over_ranks(stats);
  // The training loader gives every rank the same batch size; on the CPU (free to check) a
  // rank whose count disagrees is an error rather than wrong statistics.
  const double count = static_cast<double>(rows) * world;
  if (dev.is_cpu()) {
    const double rows_seen = stats.data<double>()[2 * c];
    if (rows_seen != count)
      throw std::runtime_error("sync_batchnorm: ranks have different batch sizes (" +
                               std::to_string(rows_seen) + " rows, expected " +
                               std::to_string(count) + ")");
  }
  if (count < 2) throw std::invalid_argument("sync_batchnorm: a global batch of one row");
  const Tensor mean64 = t::scale(stats.slice(0, c), 1.0 / count);
  // var = E[x^2] - mean^2 in float64; relu guards a rounding-negative zero variance.
  const Tensor var64 =
      t::relu(t::sub(t::scale(stats.slice(c, 2 * c), 1.0 / count), t::mul(mean64, mean64)));
  const Tensor mean = mean64.to(pd), var = var64.to(pd);
  Tensor y = t::batchnorm_eval(xd, gamma.data(), beta.data(), mean, var, eps);
  if (running_mean.defined()) {  // PyTorch: the unbiased variance for the running estimate
    running_mean.copy_from(t::add(t::scale(running_mean, 1 - momentum), t::scale(mean, momentum)));
    running_var.copy_from(
        t::add(t::scale(running_var, 1 - momentum), t::scale(var, momentum * count / (count - 1))));
  }
  std::shared_ptr<SyncBatchNormNode> node;
  if (needs_grad({&x, &gamma, &beta})) {
    node = std::make_shared<SyncBatchNormNode>();
    node->x = xd;
    node->gamma = gamma.data();
    node->mean = mean;
    node->var = var;
    node->eps = eps;
    node->count = count;
    node->sum_over_ranks = sum_over_ranks;
  }
  return make_result(y, node, {&x, &gamma, &beta});
}

}  // namespace mlai::autograd
