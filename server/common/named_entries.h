#ifndef MANTISSA_SERVER_COMMON_NAMED_ENTRIES_H_
#define MANTISSA_SERVER_COMMON_NAMED_ENTRIES_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "server/common/option_reader.h"

namespace mantissa {

// Lookups over a registry's table: rows of any struct with a `const char*
// name` (models, datasets, precision modes, optimizers, LR schedules).

// The names, in table order.
template <typename Entry>
std::vector<std::string> EntryNames(const std::vector<Entry>& entries) {
  std::vector<std::string> names;
  names.reserve(entries.size());
  for (const Entry& e : entries) names.push_back(e.name);
  return names;
}

// The row named `name`, or null.
template <typename Entry>
const Entry* FindEntry(const std::vector<Entry>& entries, absl::string_view name) {
  for (const Entry& e : entries) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

// The row named `name`'s `parse` over `options` (errors name `field`, e.g.
// "model_options"), refusing options it did not read. NOT_FOUND for an
// unknown name, e.g. "model: unknown model 'x'; valid models: mlp, ...".
template <typename Entry>
auto ParseEntryOptions(const std::vector<Entry>& entries, absl::string_view kind,
                       const std::string& name, const std::string& field,
                       const std::map<std::string, std::string>& options)
    -> decltype(entries.front().parse(std::declval<OptionReader&>())) {
  const Entry* entry = FindEntry(entries, name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat(kind, ": unknown ", kind, " '", name, "'; valid ", kind,
                                            "s: ", absl::StrJoin(EntryNames(entries), ", ")));
  }
  OptionReader reader(field, options);
  auto parsed = entry->parse(reader);
  if (!parsed.ok()) return parsed;
  if (absl::Status unused = reader.CheckAllUsed(); !unused.ok()) return unused;
  return parsed;
}

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_NAMED_ENTRIES_H_
