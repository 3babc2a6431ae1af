// The NCCL communicator (CUDA builds only): see nccl_communicator_cuda.cpp.
#pragma once

#include <memory>

#include "dist/communicator.h"

namespace mlai::dist {

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group,
                                                     const tensor::Device& device);

}  // namespace mlai::dist
