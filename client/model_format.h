#ifndef MANTISSA_CLIENT_MODEL_FORMAT_H_
#define MANTISSA_CLIENT_MODEL_FORMAT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "mantissa/v1/serving.pb.h"

// Renderings of served models and inference responses for `mantissa models`,
// `export`, `load` and `infer`. Pure string building, tested without a daemon.
namespace mantissa::cli {

// The table of `mantissa models`: one row per model, for its newest served
// version (else its latest), with the versions served and the version policy:
//   NAME  VERSION  STATE  PRECISION  SOURCE  MAX |DIFF|  REL DIFF  TOP-1  SERVED  POLICY
// SOURCE is the job the weights came from or "torchscript"; the last three
// are the cast validation's max |half - fp32|, mean relative difference and
// top-1 agreement ("-" where unknown; "non-finite" for a cast whose outputs
// were not finite). Then one line per version that is not READY (the row's,
// and others whose reason is more than being superseded or left out by the
// policy): "NAME version V: STATE: reason", and for versions whose
// validation measured layers or accuracy, "NAME version V: " and those
// figures (ValidationDetails). "no models" when empty.
std::string FormatModelTable(const v1::ListModelsResponse& response);

// The per-layer and accuracy figures of a validation, one line each, empty
// when it has none:
//   first divergent layer: 3 (mean rel diff 0.0213 > tolerance 0.01)
//   accuracy: fp32 91.41%, cast 91.02% on 128 labelled items
std::vector<std::string> ValidationDetails(const v1::HalfCastValidation& validation);

// The version requests without a version go to: the newest READY one, else
// (nothing serves) the newest, whose reason says why. `model` has versions.
const v1::ModelVersionStatus& ShownVersion(const v1::ModelStatus& model);

// "latest 1", "all", "specific 1, 3".
std::string FormatVersionPolicy(const v1::VersionPolicy& policy);

// What `mantissa rollback` and `version-policy` print:
//   model NAME: policy specific 1; serving version 1
// then a line per version that is not READY for a reason of its own.
std::string FormatModelStatus(const v1::ModelStatus& model);

// `mantissa stats`: one row per model version,
//   MODEL  VERSION  OK  FAILED  QUEUE MS  COMPUTE MS  INFERENCES  EXECUTIONS
// (means per answered request; compute = decode + forward + encode), then
// per version and batch size "NAME version V batch B: N executions, mean
// forward X ms". "no statistics" when empty.
std::string FormatStatistics(const inference::ModelStatisticsResponse& response);

// What `mantissa export` and `load --torchscript` print for the new version:
//   model NAME version V: READY, bf16-true
//   validation: max |diff| 0.0156, mean rel diff 0.412%, top-1 agreement 99.61%
//     on <calibration source> in 0.8s
// ("validation: NON-FINITE outputs" for a refused cast), and "reason: ..."
// for a version that is not READY.
std::string FormatModelVersion(const v1::ModelVersionStatus& model);

// The values of output `index` as doubles: its raw_output_contents decoded
// in its datatype, or its typed contents when the response has no raw ones.
absl::StatusOr<std::vector<double>> OutputValues(const inference::ModelInferResponse& response,
                                                 int index);

// `mantissa infer` for people: "model NAME version V", then per output
// "output NAME DATATYPE [d0,d1,...]"; a 2-D [batch, classes] output adds
// "  item I: argmax K (VALUE)" per item, others their first values.
absl::StatusOr<std::string> FormatInferResponse(const inference::ModelInferResponse& response);

// `mantissa infer --json`: the KServe v2 REST response body
//   {"model_name", "model_version", "id",
//    "outputs": [{"name", "datatype", "shape", "data": [flat, row-major]}]}
// with 16-bit floats decoded; non-finite values as "NaN", "Infinity",
// "-Infinity" (as protobuf's JSON mapping writes them).
absl::StatusOr<std::string> FormatInferResponseJson(const inference::ModelInferResponse& response);

// The shortest decimal that reads back as the same float: "0.1", "2.453125".
std::string FormatFloat(double value);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_MODEL_FORMAT_H_
