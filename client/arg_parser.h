#ifndef MANTISSA_CLIENT_ARG_PARSER_H_
#define MANTISSA_CLIENT_ARG_PARSER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mantissa::cli {

// Parses long flags ("--batch-size=64" or "--batch-size 64") into variables the
// caller owns. A variable is only written when its flag appears, so optional
// outputs tell "not given" apart from zero and the server can fill defaults.
class ArgParser {
 public:
  ArgParser() = default;
  ArgParser(const ArgParser&) = delete;
  ArgParser& operator=(const ArgParser&) = delete;

  // `value_name` stands for the value in Help(), e.g. "--steps=N".
  void AddString(std::string name, std::optional<std::string>* out, std::string help,
                 std::string value_name = "VALUE");
  void AddInt(std::string name, std::optional<int64_t>* out, std::string help,
              std::string value_name = "N");
  void AddUint(std::string name, std::optional<uint64_t>* out, std::string help,
               std::string value_name = "N");
  void AddDouble(std::string name, std::optional<double>* out, std::string help,
                 std::string value_name = "X");
  // Takes no value ("--wait"); "--wait=false" is accepted too.
  void AddBool(std::string name, bool* out, std::string help);
  // The same, for a setting whose explicit "=false" must reach the daemon:
  // `out` stays unset unless the flag appears.
  void AddBool(std::string name, std::optional<bool>* out, std::string help);
  // Every occurrence appends its value.
  void AddRepeated(std::string name, std::vector<std::string>* out, std::string help,
                   std::string value_name = "VALUE");
  // Lets "-h" stand for "--help"; `name` must already be added.
  void AddShortName(char short_name, absl::string_view name);

  // When set, parsing ends at the first positional argument, which is returned
  // with everything after it unparsed. Used to read global flags that come
  // before the command name.
  void set_stop_at_positional(bool stop) { stop_at_positional_ = stop; }

  // Appended, on a line of its own, to the message of an unknown flag: e.g.
  // the flags that are valid where it was given.
  void set_unknown_flag_hint(std::string hint) { unknown_flag_hint_ = std::move(hint); }

  // "--name" of each flag, in the order the flags were added.
  std::vector<std::string> FlagNames() const;

  // Parses `args` (without the program name) and returns the positional
  // arguments. Errors are INVALID_ARGUMENT and name the offending flag.
  absl::StatusOr<std::vector<std::string>> Parse(const std::vector<std::string>& args);

  // One aligned line per flag, in the order the flags were added.
  std::string Help() const;

 private:
  using Target =
      std::variant<std::optional<std::string>*, std::optional<int64_t>*, std::optional<uint64_t>*,
                   std::optional<double>*, bool*, std::optional<bool>*, std::vector<std::string>*>;
  struct Flag {
    std::string name;
    Target target;
    std::string help;
    std::string value_name;  // empty for bools
    char short_name = 0;
  };

  void Add(std::string name, Target target, std::string help, std::string value_name);
  Flag* Find(absl::string_view name);
  absl::Status UnknownFlag(absl::string_view arg) const;
  static absl::Status Assign(const Flag& flag, absl::string_view value);

  std::vector<Flag> flags_;
  bool stop_at_positional_ = false;
  std::string unknown_flag_hint_;
};

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_ARG_PARSER_H_
