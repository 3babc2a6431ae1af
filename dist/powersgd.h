// PowerSGD gradient compression for one float32 gradient bucket (Vogels, Karimireddy and Jaggi,
// "PowerSGD: Practical Low-Rank Gradient Compression", NeurIPS 2019), as PyTorch DDP's
// powerSGD_hook does it (--ddp-comm-hook powersgd):
// - each parameter of two or more dimensions, viewed as an n x m matrix M (n = its first
//   dimension), whose rank-r factors are at least 2x smaller than it (torch's
//   min_compression_rate), travels as two thin factors: P = M Q (n x r) is summed over ranks and
//   orthonormalized, then Q = M^T P (m x r) is summed, and P Q^T, the projection of the summed
//   gradient onto P's columns, replaces it. Q is kept for the next step (warm start), starting
//   from the same normal draws on every rank;
// - the other parameters (biases, batch norm, small matrices) are summed as they are, in the
//   same allreduce as the P's;
// - error feedback: what the compression left out of this rank's gradient (its input less the
//   mean approximation) is added to its next gradient.
// The gradients then hold the approximated sum over ranks, as an uncompressed allreduce leaves
// the exact sum. Orthonormalizing P goes through its r x r Gram matrices on the host (one copy
// each way per bucket and step: Cholesky QR, the same factor as Gram-Schmidt's). A step whose
// gradients overflowed on any rank (inf/nan) leaves nan in every rank's matrices and the
// compression's state (Q, errors) as it was, so the loss scaler's skip costs nothing later.
#pragma once

#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "tensor/tensor.h"

namespace mlai::dist {

class PowerSgdBucket {
 public:
  struct Param {
    int64_t offset;  // in the bucket's flat buffer
    tensor::Shape shape;
  };
  // The bucket's parameters in its flat buffer's order; rank r >= 1; seed for Q's first draws
  // (the same on every rank).
  PowerSgdBucket(const std::vector<Param>& params, int rank, uint64_t seed,
                 const tensor::Device& device);

  // Round 1, when the bucket's gradients are final: adds the last step's error to `flat`,
  // computes the P's and packs them and the uncompressed values into wire().
  void compress(tensor::Tensor& flat);
  tensor::Tensor& wire() { return wire_; }
  // Round 2, after wire()'s allreduce: the uncompressed sums back into `flat`, P orthonormalized,
  // Q = M^T P summed over ranks with `comm` (blocking), P Q^T into `flat`, and this rank's error
  // for the next step.
  void decompress(tensor::Tensor& flat, Communicator& comm);

  int64_t compressed_matrices() const { return static_cast<int64_t>(mats_.size()); }
  // Bytes both rounds send per step, and what the bucket itself would.
  size_t wire_bytes() const { return wire_.nbytes() + q_.nbytes(); }

 private:
  struct Matrix {
    int64_t offset, n, m;  // the gradient: flat[offset, offset + n m) as n x m
    int64_t p_offset;      // its P^T (r x n) in wire_ (after the uncompressed values)
    int64_t q_offset;      // its Q (m x r) in q_
    int64_t t_offset;      // its P^T scratch (r x n) in tmp_
  };
  struct Segment {
    int64_t offset, numel, wire_offset;
  };
  int r_;
  std::vector<Matrix> mats_;
  std::vector<Segment> plain_;  // summed as they are
  tensor::Tensor wire_, q_, tmp_, gram_, error_;
  bool has_error_ = false;
};

}  // namespace mlai::dist
