// The file-backed datasets through the real daemon: real data trains, and a
// broken file fails the submission or the job with a message that names the
// file and the problem.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "tests/testing/daemon_test.h"

namespace mantissa {
namespace {

using testing::DaemonTest;
using ::testing::HasSubstr;

// nanoGPT's layout: little-endian uint16 token ids.
void WriteTokens(const std::string& path, const std::vector<uint16_t>& tokens) {
  std::ofstream out(path, std::ios::binary);
  for (uint16_t t : tokens) {
    const char bytes[2] = {static_cast<char>(t & 0xff), static_cast<char>(t >> 8)};
    out.write(bytes, 2);
  }
}

// A cycle of `period` distinct tokens from [0, vocab), `n` tokens long.
std::vector<uint16_t> Pattern(int n, int period, int vocab) {
  std::vector<uint16_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = static_cast<uint16_t>((i % period) * 7 % vocab);
  return tokens;
}

v1::JobSpec TokensGptSpec(const std::string& dir) {
  v1::JobSpec spec;
  spec.set_model("gpt");
  (*spec.mutable_model_options())["d_model"] = "32";
  (*spec.mutable_model_options())["layers"] = "1";
  (*spec.mutable_model_options())["heads"] = "2";
  spec.set_dataset("tokens");
  (*spec.mutable_dataset_options())["dir"] = dir;
  (*spec.mutable_dataset_options())["vocab"] = "128";
  (*spec.mutable_dataset_options())["seq_len"] = "32";
  spec.set_steps(60);
  spec.set_batch_size(8);
  spec.set_lr(3e-3);
  spec.set_seed(4);
  return spec;
}

using DatasetsTest = DaemonTest;

TEST_F(DatasetsTest, TokenFilesTrainAGptAndBadFilesAreNamed) {
  const std::string dir = dir_.File("corpus");
  std::filesystem::create_directories(dir);
  WriteTokens(dir + "/train.bin", Pattern(20000, 12, 128));
  WriteTokens(dir + "/val.bin", Pattern(2000, 12, 128));
  const v1::Job good = SubmitAndWait(TokensGptSpec(dir));
  ASSERT_EQ(good.state(), v1::SUCCEEDED) << good.error();
  EXPECT_LT(good.result().final_loss(), 0.5 * std::log(128.0));
  EXPECT_TRUE(good.result().has_eval_perplexity());

  // A token id beyond the vocabulary fails the job, naming the file and the
  // token's position, not its value (no message quotes a file's content).
  std::vector<uint16_t> bad = Pattern(20000, 12, 128);
  bad[777] = 500;
  WriteTokens(dir + "/train.bin", bad);
  const v1::Job out_of_vocab = SubmitAndWait(TokensGptSpec(dir));
  EXPECT_EQ(out_of_vocab.state(), v1::FAILED);
  EXPECT_THAT(out_of_vocab.error(), HasSubstr(dir + "/train.bin"));
  EXPECT_THAT(out_of_vocab.error(), HasSubstr("token 777 is >= vocab 128"));
  EXPECT_THAT(out_of_vocab.error(), ::testing::Not(HasSubstr("500")));

  // Half a token at the end: the size is checked at submission.
  { std::ofstream(dir + "/train.bin", std::ios::binary | std::ios::app) << 'x'; }
  auto odd = testing::Submit(*stub_, TokensGptSpec(dir));
  EXPECT_EQ(odd.status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(odd.status.error_message(), HasSubstr("train.bin"));

  std::filesystem::remove(dir + "/train.bin");
  auto missing = testing::Submit(*stub_, TokensGptSpec(dir));
  EXPECT_EQ(missing.status.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(missing.status.error_message(), HasSubstr("train.bin"));
}

TEST_F(DatasetsTest, CsvTrainsAClassifierAndBadRowsAreNamed) {
  const std::string path = dir_.File("points.csv");
  {
    // Two features; the label says which side of x + y = 0 the point is on.
    std::ofstream out(path);
    out << "x,y,side\n";
    for (int i = 0; i < 400; ++i) {
      const double x = std::sin(i * 1.7) * 3, y = std::cos(i * 2.3) * 3;
      out << x << "," << y << "," << (x + y > 0 ? "above" : "below") << "\n";
    }
  }
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "16";
  spec.set_dataset("csv");
  (*spec.mutable_dataset_options())["path"] = path;
  (*spec.mutable_dataset_options())["label"] = "side";
  spec.set_epochs(20);
  spec.set_batch_size(16);
  spec.set_lr(1e-2);
  const v1::Job job = SubmitAndWait(spec);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_GT(job.result().eval_accuracy(), 0.9);

  { std::ofstream(path, std::ios::app) << "1.0,abc,above\n"; }
  const v1::Job bad = SubmitAndWait(spec);
  EXPECT_EQ(bad.state(), v1::FAILED);
  EXPECT_THAT(bad.error(), HasSubstr(path));
  EXPECT_THAT(bad.error(), HasSubstr("line 402"));

  // A missing file is refused like one outside --data_root.
  (*spec.mutable_dataset_options())["path"] = dir_.File("nope.csv");
  auto missing = testing::Submit(*stub_, spec);
  EXPECT_EQ(missing.status.error_code(), grpc::PERMISSION_DENIED);
  EXPECT_THAT(missing.status.error_message(), HasSubstr("nope.csv"));
}

TEST_F(DatasetsTest, IrisFromScikitLearnsDebianPackage) {
  const std::string iris = std::string(MANTISSA_TEST_DATA_DIR) + "/iris.csv";
  if (!std::filesystem::exists(iris)) GTEST_SKIP() << iris << " not fetched (offline?)";
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "16";
  spec.set_dataset("csv");
  (*spec.mutable_dataset_options())["path"] = iris;
  spec.set_epochs(60);
  spec.set_batch_size(16);
  spec.set_lr(1e-2);
  spec.set_seed(1);
  const v1::Job job = SubmitAndWait(spec);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  std::printf("iris: test accuracy %.3f after %lld steps\n", job.result().eval_accuracy(),
              static_cast<long long>(job.result().steps_completed()));
  EXPECT_GT(job.result().eval_accuracy(), 0.85);
}

}  // namespace
}  // namespace mantissa
