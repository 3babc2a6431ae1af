// Finite-difference gradient checking (see gradcheck.h).
#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opt) {
  for (const Tensor& x : inputs)
    if (x.dtype() != DType::kFloat64 || !x.device().is_cpu())
      throw std::invalid_argument("gradcheck needs float64 CPU inputs, got " + x.str());

  std::vector<Variable> vars;
  for (const Tensor& x : inputs) vars.emplace_back(x.clone(), true);
  Variable out = f(vars);
  t::Generator gen(opt.seed);
  const Tensor w = Tensor::uniform(out.shape(), -1.0, 1.0, gen, DType::kFloat64);
  sum(mul(out, Variable(w))).backward();

  // L at the current values of the (perturbed in place) inputs, without recording a graph.
  auto loss = [&]() {
    NoGradGuard ng;
    return t::sum(t::mul(f(vars).data(), w)).item();
  };

  GradcheckResult res;
  for (size_t k = 0; k < vars.size(); ++k) {
    Tensor& x = vars[k].data();
    double* p = x.data<double>();
    const Tensor& g = vars[k].grad();
    const std::vector<double> analytic =
        g.defined() ? g.to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double orig = p[i];
      p[i] = orig + opt.eps;
      const double lp = loss();
      p[i] = orig - opt.eps;
      const double lm = loss();
      p[i] = orig;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double err = std::fabs(numeric - analytic[i]);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (err > opt.atol + opt.rtol * std::fabs(numeric) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "input " << k << " element " << i << ": analytic " << analytic[i] << ", numeric "
           << numeric << " (error " << err << ")";
        res.message = os.str();
      }
    }
  }
  return res;
}

}  // namespace mlai::autograd
