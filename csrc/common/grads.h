// Gradient outputs of the backward ops. Every backward op returns all its
// gradient slots (the schema's fixed tuple); a slot whose output_mask entry is
// false holds an empty tensor, which autograd then ignores.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

namespace lenetalex {

// An uninitialized gradient of `sizes` if it is wanted, else an empty tensor.
inline at::Tensor grad_or_empty(bool wanted, at::IntArrayRef sizes,
                                const at::TensorOptions& opts) {
  return wanted ? at::empty(sizes, opts) : at::empty({0}, opts);
}

// A gradient some other op computed (ATen's convolution_backward, which may
// hand back its own layout and leaves unwanted slots undefined) as the slot's
// value: itself made contiguous if it is wanted, else the empty tensor above.
inline at::Tensor grad_or_empty(bool wanted, const at::Tensor& computed,
                                const at::TensorOptions& opts) {
  return wanted ? computed.contiguous() : at::empty({0}, opts);
}

}  // namespace lenetalex
