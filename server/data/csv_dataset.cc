#include "server/data/csv_dataset.h"

#include <ATen/CPUGeneratorImpl.h>
#include <errno.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"
#include "server/data/path_options.h"

namespace mantissa {
namespace {

// A field without surrounding blanks and without one pair of enclosing quotes.
std::string Field(absl::string_view raw) {
  absl::string_view f = absl::StripAsciiWhitespace(raw);
  if (f.size() >= 2 && f.front() == '"' && f.back() == '"') f = f.substr(1, f.size() - 2);
  return std::string(f);
}

std::vector<std::string> SplitRow(absl::string_view line) {
  std::vector<std::string> fields;
  for (absl::string_view raw : absl::StrSplit(line, ',')) fields.push_back(Field(raw));
  return fields;
}

// The file's rows as parsed, before labels are numbered.
struct Table {
  std::vector<std::string> columns;
  int64_t label_column = 0;
  std::vector<float> features;  // row-major [rows, columns - 1]
  std::vector<std::string> labels;
  std::vector<int64_t> lines;  // 1-based line of each row, for messages
};

absl::StatusOr<Table> ReadTable(const CsvDataset::Options& o, const std::string& where) {
  std::ifstream in(o.path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": cannot open: ", std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  Table t;
  int64_t line_number = 0;
  bool have_header = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    absl::ConsumeSuffix(&line, "\r");
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<std::string> fields = SplitRow(line);
    if (!have_header) {
      have_header = true;
      t.columns = std::move(fields);
      if (o.label.empty()) {
        t.label_column = static_cast<int64_t>(t.columns.size()) - 1;
      } else {
        auto it = std::find(t.columns.begin(), t.columns.end(), o.label);
        if (it == t.columns.end()) {
          // The header is the file's content: only its size is told.
          return absl::InvalidArgumentError(
              absl::StrCat("dataset_options[label]: ", o.path, " has no column '", o.label,
                           "' (its header has ", t.columns.size(), " columns)"));
        }
        t.label_column = it - t.columns.begin();
      }
      if (t.columns.size() < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": the header has ", t.columns.size(),
                         " column; a feature column and a label column are needed"));
      }
      continue;
    }
    if (fields.size() != t.columns.size()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": line ", line_number, " has ",
                                                     fields.size(), " columns, the header has ",
                                                     t.columns.size()));
    }
    for (size_t c = 0; c < fields.size(); ++c) {
      if (static_cast<int64_t>(c) == t.label_column) continue;
      double value = 0;
      const bool parsed = absl::SimpleAtod(fields[c], &value);
      if (!parsed || !std::isfinite(value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": line ", line_number, ", column ", c + 1,
                         parsed ? ": not a finite number" : ": not a number"));
      }
      t.features.push_back(static_cast<float>(value));
    }
    t.labels.push_back(std::move(fields[t.label_column]));
    t.lines.push_back(line_number);
  }
  if (!have_header) return absl::InvalidArgumentError(absl::StrCat(where, ": the file is empty"));
  if (t.labels.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the file has a header but no data rows"));
  }
  return t;
}

// Integer labels as they are (`*integers` true); otherwise the sorted
// distinct strings numbered.
std::vector<int64_t> NumberLabels(const std::vector<std::string>& labels, bool* integers) {
  std::vector<int64_t> ids(labels.size());
  bool all_integers = true;
  for (size_t i = 0; i < labels.size() && all_integers; ++i) {
    all_integers = absl::SimpleAtoi(labels[i], &ids[i]) && ids[i] >= 0;
  }
  *integers = all_integers;
  if (all_integers) return ids;
  std::map<std::string, int64_t> classes;  // sorted
  for (const std::string& label : labels) classes.emplace(label, 0);
  int64_t next = 0;
  for (auto& [label, id] : classes) id = next++;
  for (size_t i = 0; i < labels.size(); ++i) ids[i] = classes.at(labels[i]);
  return ids;
}

}  // namespace

absl::StatusOr<CsvDataset::Options> CsvDataset::ParseOptions(OptionReader& reader) {
  Options o;
  ASSIGN_OR_RETURN(o.path, reader.String("path", ""));
  ASSIGN_OR_RETURN(o.label, reader.String("label", ""));
  ASSIGN_OR_RETURN(o.test_fraction, reader.Double("test_fraction", o.test_fraction));
  ASSIGN_OR_RETURN(std::string normalize, reader.Choice("normalize", "true", {"true", "false"}));
  ASSIGN_OR_RETURN(o.classes, reader.Int("classes", 0, 2, 1 << 24));
  o.normalize = normalize == "true";
  // A misspelt key (file=, train_path=) explains a missing one: report it first.
  RETURN_IF_ERROR(reader.CheckAllUsed());
  if (o.path.empty()) {
    return absl::InvalidArgumentError("dataset_options[path]: required (the CSV file to read)");
  }
  if (!(o.test_fraction >= 0.0 && o.test_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset_options[test_fraction]: ", o.test_fraction, " is not in [0, 1)"));
  }
  return o;
}

absl::Status CsvDataset::CheckFile(const Options& o) {
  struct stat st;
  if (::stat(o.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("dataset_options[path]: ", o.path, ": not found or not a regular file"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DatasetSplits> CsvDataset::Load(const Options& o, uint64_t seed) {
  RETURN_IF_ERROR(CheckFile(o));
  const std::string where = absl::StrCat("dataset_options[path]: ", o.path);
  ASSIGN_OR_RETURN(Table table, ReadTable(o, where));
  bool integer_labels = false;
  const std::vector<int64_t> labels = NumberLabels(table.labels, &integer_labels);
  const auto max_it = std::max_element(labels.begin(), labels.end());
  const int64_t max_label = *max_it;
  // The classes option's bound; it also keeps max_label + 1 from overflowing.
  constexpr int64_t kMaxClasses = 1 << 24;
  if (o.classes == 0 && max_label >= kMaxClasses) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": line ", table.lines[max_it - labels.begin()],
                     ": the label is over the largest class id ", kMaxClasses - 1,
                     integer_labels ? " (labels are class ids)"
                                    : " (label names are numbered in sorted order)"));
  }
  const int64_t num_classes = o.classes > 0 ? o.classes : max_label + 1;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": line ", table.lines[i], ": the label is out of range for classes=", num_classes,
          integer_labels ? " (labels are class ids)"
                         : " (label names are numbered in sorted order)"));
    }
  }

  const int64_t rows = static_cast<int64_t>(labels.size());
  const int64_t num_features = static_cast<int64_t>(table.columns.size()) - 1;
  // Explicit dtypes: a concurrent job's module-init guard may have changed
  // the process-wide default for a moment.
  torch::Tensor features =
      torch::from_blob(table.features.data(), {rows, num_features}, torch::kFloat32).clone();
  torch::Tensor targets =
      torch::from_blob(const_cast<int64_t*>(labels.data()), {rows}, torch::kInt64).clone();

  const int64_t test_rows = std::llround(static_cast<double>(rows) * o.test_fraction);
  if (test_rows >= rows) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", rows, " rows with test_fraction ",
                                                   o.test_fraction, " leave no training rows"));
  }
  // A private generator: concurrent jobs must not disturb each other's split.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor order = torch::randperm(rows, gen, torch::TensorOptions(torch::kInt64));
  const torch::Tensor test_index = order.slice(0, 0, test_rows);
  const torch::Tensor train_index = order.slice(0, test_rows);
  torch::Tensor train_x = features.index_select(0, train_index);
  torch::Tensor test_x = features.index_select(0, test_index);
  if (o.normalize) {
    const torch::Tensor mean = train_x.mean(0);
    torch::Tensor stddev = train_x.std(0, /*unbiased=*/false);
    // A constant column carries no information; leave it at zero.
    stddev = torch::where(stddev > 0, stddev, torch::ones_like(stddev));
    train_x = (train_x - mean) / stddev;
    test_x = (test_x - mean) / stddev;
  }

  DatasetSplits splits;
  splits.train = std::make_unique<TensorDataset>(train_x, targets.index_select(0, train_index));
  if (test_rows > 0) {
    splits.test = std::make_unique<TensorDataset>(test_x, targets.index_select(0, test_index));
  }
  splits.spec.input_shape = {num_features};
  splits.spec.num_classes = num_classes;
  return splits;
}

absl::StatusOr<std::shared_ptr<const DatasetConfig>> CsvDataset::ParseConfig(OptionReader& reader) {
  ASSIGN_OR_RETURN(Options options, ParseOptions(reader));
  return MakeDatasetConfig(kName, std::move(options), &CheckFile, &Load);
}

absl::Status CsvDataset::ConfinePaths(std::map<std::string, std::string>& options,
                                      const FileRoots& roots) {
  return ConfinePathOption(options, "path", roots);
}

}  // namespace mantissa
