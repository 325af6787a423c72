#include "server/training/rank_options.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mantissa {
namespace {

// The integer in environment variable `name`, at least `min`.
absl::StatusOr<int> IntVariable(const char* name, int min) {
  const char* value = std::getenv(name);
  if (value == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not set in the environment"));
  }
  int parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < min) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": must be an integer >= ", min, ", got '", value, "'"));
  }
  return parsed;
}

}  // namespace

absl::StatusOr<RankEnvironment> RankEnvironment::FromEnvironment() {
  RankEnvironment env;
  absl::StatusOr<int> v = IntVariable("WORLD_SIZE", 1);
  if (!v.ok()) return v.status();
  env.world_size = *v;
  if (v = IntVariable("RANK", 0); !v.ok()) return v.status();
  env.rank = *v;
  if (env.rank >= env.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("RANK: must be < WORLD_SIZE (", env.world_size, "), got ", env.rank));
  }
  if (v = IntVariable("LOCAL_RANK", 0); !v.ok()) return v.status();
  env.local_rank = *v;
  if (env.local_rank > env.rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("LOCAL_RANK: must be <= RANK (", env.rank, "), got ", env.local_rank));
  }
  if (v = IntVariable("MASTER_PORT", 0); !v.ok()) return v.status();
  if (*v > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT: must be <= 65535, got ", *v));
  }
  env.master_port = *v;
  if (env.rank > 0 && env.master_port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MASTER_PORT: rank ", env.rank, " needs rank 0's store port, got 0"));
  }
  const char* addr = std::getenv("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') {
    return absl::InvalidArgumentError("MASTER_ADDR: not set in the environment");
  }
  env.master_addr = addr;
  return env;
}

}  // namespace mantissa
