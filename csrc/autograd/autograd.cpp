// The Autograd and Autocast kernels of every op (autograd/<op>.h) and their
// registrations, compiled as one translation unit: the autograd headers
// (custom_function.h, autocast_mode.h) take ~30 s to compile, once here
// rather than once per op.
#include <torch/library.h>

#include "autograd/avg_subsample.h"
#include "autograd/conv2d_activation.h"
#include "autograd/lenet5.h"
#include "autograd/local_response_norm.h"
#include "autograd/rbf_distance.h"

namespace lenetalex {
namespace autograd {

// Every op, forward and backward.
TORCH_LIBRARY_IMPL(lenetalex, Autograd, m) {
  m.impl("conv2d_activation", &conv::autograd_kernel);
  m.impl("conv2d_activation_backward", &conv::backward_autograd_kernel);
  m.impl("avg_subsample", &subsample::autograd_kernel);
  m.impl("avg_subsample_backward", &subsample::backward_autograd_kernel);
  m.impl("local_response_norm", &lrn::autograd_kernel);
  m.impl("local_response_norm_backward", &lrn::backward_autograd_kernel);
  m.impl("rbf_distance", &rbf::autograd_kernel);
  m.impl("rbf_distance_backward", &rbf::backward_autograd_kernel);
  m.impl("lenet5", &lenet5::autograd_kernel);
  m.impl("lenet5_backward", &lenet5::backward_autograd_kernel);
}

// The forward ops only: a backward op runs in its forward's dtype, and
// autocast is off in the backward pass.
template <c10::DeviceType Device>
void register_autocast(torch::Library& m) {
  m.impl("conv2d_activation", &conv::autocast_kernel<Device>);
  m.impl("avg_subsample", &subsample::autocast_kernel<Device>);
  m.impl("local_response_norm", &lrn::autocast_kernel<Device>);
  m.impl("rbf_distance", &rbf::autocast_kernel<Device>);
}

TORCH_LIBRARY_IMPL(lenetalex, AutocastCPU, m) { register_autocast<c10::DeviceType::CPU>(m); }

TORCH_LIBRARY_IMPL(lenetalex, AutocastCUDA, m) { register_autocast<c10::DeviceType::CUDA>(m); }

}  // namespace autograd
}  // namespace lenetalex
