#include "client/arg_parser.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace mantissa::cli {
namespace {

// Visitor overload set for std::visit.
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

absl::StatusOr<bool> ParseBool(absl::string_view value) {
  const std::string lower = absl::AsciiStrToLower(value);
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  return absl::InvalidArgumentError("is not true or false");
}

}  // namespace

void ArgParser::AddString(std::string name, std::optional<std::string>* out, std::string help,
                          std::string value_name) {
  Add(std::move(name), out, std::move(help), std::move(value_name));
}

void ArgParser::AddInt(std::string name, std::optional<int64_t>* out, std::string help,
                       std::string value_name) {
  Add(std::move(name), out, std::move(help), std::move(value_name));
}

void ArgParser::AddUint(std::string name, std::optional<uint64_t>* out, std::string help,
                        std::string value_name) {
  Add(std::move(name), out, std::move(help), std::move(value_name));
}

void ArgParser::AddDouble(std::string name, std::optional<double>* out, std::string help,
                          std::string value_name) {
  Add(std::move(name), out, std::move(help), std::move(value_name));
}

void ArgParser::AddBool(std::string name, bool* out, std::string help) {
  Add(std::move(name), out, std::move(help), "");
}

void ArgParser::AddBool(std::string name, std::optional<bool>* out, std::string help) {
  Add(std::move(name), out, std::move(help), "");
}

void ArgParser::AddRepeated(std::string name, std::vector<std::string>* out, std::string help,
                            std::string value_name) {
  Add(std::move(name), out, std::move(help), std::move(value_name));
}

void ArgParser::AddShortName(char short_name, absl::string_view name) {
  if (Flag* flag = Find(name)) flag->short_name = short_name;
}

void ArgParser::Add(std::string name, Target target, std::string help, std::string value_name) {
  flags_.push_back(Flag{std::move(name), target, std::move(help), std::move(value_name)});
}

ArgParser::Flag* ArgParser::Find(absl::string_view name) {
  for (Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

absl::Status ArgParser::UnknownFlag(absl::string_view arg) const {
  const absl::string_view flag = arg.substr(0, arg.find('='));
  std::string message = absl::StrCat("unknown flag ", flag);
  // "--batch_size" is a common slip for "--batch-size"; point at the real name.
  absl::string_view name = flag;
  name.remove_prefix(std::min(name.find_first_not_of('-'), name.size()));
  const std::string kebab = absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
  for (const Flag& flag : flags_) {
    if (flag.name == kebab) {
      absl::StrAppend(&message, " (did you mean --", flag.name, "?)");
      break;
    }
  }
  if (!unknown_flag_hint_.empty()) absl::StrAppend(&message, "\n", unknown_flag_hint_);
  return absl::InvalidArgumentError(message);
}

std::vector<std::string> ArgParser::FlagNames() const {
  std::vector<std::string> names;
  for (const Flag& flag : flags_) names.push_back(absl::StrCat("--", flag.name));
  return names;
}

absl::Status ArgParser::Assign(const Flag& flag, absl::string_view value) {
  const auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag.name, ": '", value, "' ", what));
  };
  return std::visit(Overloaded{
                        [&](std::optional<std::string>* out) {
                          *out = std::string(value);
                          return absl::OkStatus();
                        },
                        [&](std::optional<int64_t>* out) {
                          int64_t parsed = 0;
                          if (!absl::SimpleAtoi(value, &parsed))
                            return invalid("is not an integer");
                          *out = parsed;
                          return absl::OkStatus();
                        },
                        [&](std::optional<uint64_t>* out) {
                          uint64_t parsed = 0;
                          // SimpleAtoi would wrap "-1" around for unsigned types.
                          if (absl::StripAsciiWhitespace(value).substr(0, 1) == "-" ||
                              !absl::SimpleAtoi(value, &parsed)) {
                            return invalid("is not a non-negative integer");
                          }
                          *out = parsed;
                          return absl::OkStatus();
                        },
                        [&](std::optional<double>* out) {
                          double parsed = 0;
                          if (!absl::SimpleAtod(value, &parsed) || !std::isfinite(parsed)) {
                            return invalid("is not a number");
                          }
                          *out = parsed;
                          return absl::OkStatus();
                        },
                        [&](bool* out) {
                          absl::StatusOr<bool> parsed = ParseBool(value);
                          if (!parsed.ok()) return invalid(parsed.status().message());
                          *out = *parsed;
                          return absl::OkStatus();
                        },
                        [&](std::optional<bool>* out) {
                          absl::StatusOr<bool> parsed = ParseBool(value);
                          if (!parsed.ok()) return invalid(parsed.status().message());
                          *out = *parsed;
                          return absl::OkStatus();
                        },
                        [&](std::vector<std::string>* out) {
                          out->emplace_back(value);
                          return absl::OkStatus();
                        },
                    },
                    flag.target);
}

absl::StatusOr<std::vector<std::string>> ArgParser::Parse(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (stop_at_positional_) {
        positional.insert(positional.end(), args.begin() + i, args.end());
        break;
      }
      positional.push_back(arg);
      continue;
    }

    Flag* flag = nullptr;
    std::optional<absl::string_view> inline_value;
    if (arg[1] == '-') {
      absl::string_view body = absl::string_view(arg).substr(2);
      const size_t eq = body.find('=');
      if (eq != absl::string_view::npos) {
        inline_value = body.substr(eq + 1);
        body = body.substr(0, eq);
      }
      flag = Find(body);
    } else if (arg.size() == 2) {
      for (Flag& candidate : flags_) {
        if (candidate.short_name == arg[1]) flag = &candidate;
      }
    }
    if (flag == nullptr) return UnknownFlag(arg);

    if (std::holds_alternative<bool*>(flag->target) ||
        std::holds_alternative<std::optional<bool>*>(flag->target)) {
      absl::Status status = Assign(*flag, inline_value.value_or("true"));
      if (!status.ok()) return status;
      continue;
    }
    absl::string_view value;
    if (inline_value.has_value()) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      // The next argument is the value even if it starts with '-', so that
      // "--lr -1" reaches the server's validation instead of failing here.
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", flag->name, " needs a value (--",
                                                     flag->name, "=", flag->value_name, ")"));
    }
    absl::Status status = Assign(*flag, value);
    if (!status.ok()) return status;
  }
  return positional;
}

std::string ArgParser::Help() const {
  std::vector<std::pair<std::string, std::string>> lines;
  size_t width = 0;
  for (const Flag& flag : flags_) {
    std::string left = flag.short_name != 0
                           ? absl::StrCat("-", std::string(1, flag.short_name), ", --", flag.name)
                           : absl::StrCat("--", flag.name);
    if (!flag.value_name.empty()) absl::StrAppend(&left, "=", flag.value_name);
    width = std::max(width, left.size());
    lines.emplace_back(std::move(left), flag.help);
  }
  std::string out;
  for (const auto& [left, help] : lines) {
    absl::StrAppend(&out, "  ", left, std::string(width - left.size() + 2, ' '), help, "\n");
  }
  return out;
}

}  // namespace mantissa::cli
