// CPU twin of kernels/broadcast.cu.
#include "kernels/broadcast.h"

namespace mlai::kernels::cpu {

template <class T>
void broadcast_dim(const T* g, T* out, int64_t outer, int64_t dim, int64_t inner, double scale) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t i = 0; i < inner; ++i)
        out[(o * dim + d) * inner + i] = from_acc<T>(scale * to_acc(g[o * inner + i]));
}

template void broadcast_dim<float>(const float*, float*, int64_t, int64_t, int64_t, double);
template void broadcast_dim<double>(const double*, double*, int64_t, int64_t, int64_t, double);
template void broadcast_dim<Half>(const Half*, Half*, int64_t, int64_t, int64_t, double);
template void broadcast_dim<BFloat16>(const BFloat16*, BFloat16*, int64_t, int64_t, int64_t,
                                      double);

}  // namespace mlai::kernels::cpu
