#ifndef MANTISSA_CLIENT_CAPABILITIES_FORMAT_H_
#define MANTISSA_CLIENT_CAPABILITIES_FORMAT_H_

#include <string>

#include "mantissa/v1/training.pb.h"

namespace mantissa::cli {

// The view of `mantissa capabilities`: the device and versions, the worker
// that answered, its job store and the data parallelism it offers, a table
// of precisions and the lists of models, datasets and optimizers.
std::string FormatCapabilities(const v1::GetCapabilitiesResponse& capabilities);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_CAPABILITIES_FORMAT_H_
