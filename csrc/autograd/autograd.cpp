// The Autograd and Autocast kernels of every op, one header per op
// (autograd/<op>.h), compiled as one translation unit: the autograd headers
// (custom_function.h, autocast_mode.h) take ~30 s to compile, once here
// rather than once per op.
#include "autograd/avg_subsample.h"
#include "autograd/conv2d_activation.h"
#include "autograd/local_response_norm.h"
#include "autograd/rbf_distance.h"
