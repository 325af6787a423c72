#!/bin/bash
# Writes the hand-made seeds of tests/fuzz/corpus/ (valid inputs and edge
# cases for each target). Run it after changing a seed below; inputs the
# fuzzer found are added beside these by hand (see the README's Security
# section) and are not rewritten here.
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=tests/fuzz/corpus
mkdir -p "$corpus"/{tensor_codec_fuzzer,idx_fuzzer,csv_fuzzer,token_file_fuzzer,job_spec_fuzzer,kserve_json_fuzzer}

# encode MESSAGE PROTO_FILE: text format on stdin -> binary on stdout.
encode() { protoc --encode="$1" -I proto "$2"; }

# tensor_codec_fuzzer: [model byte][max batch byte][ModelInferRequest]. Models
# (see tensor_codec_fuzzer.cc): 0 mlp FP32 [4], 1 cnn FP16 [1,4,4], 2 gpt
# INT64 [8], 3 two inputs FP32 [-1,2] and INT64 [3].
request() {  # NAME MODEL_BYTE TEXT
  { printf "\\x$2\\x08"; encode inference.ModelInferRequest inference/grpc_service.proto <<<"$3"; } \
    >"$corpus/tensor_codec_fuzzer/$1"
}
f32x8='\000\000\200?\000\000\000@\000\000@@\000\000\200@\000\000\200?\000\000\000@\000\000@@\000\000\200@'
request mlp_raw 00 "inputs { name: \"input\" datatype: \"FP32\" shape: [2, 4] } raw_input_contents: \"$f32x8\""
request mlp_typed 00 'inputs { name: "input" datatype: "FP32" shape: [1, 4] contents { fp32_contents: [1, 2, 3, 4] } } outputs { name: "logits" }'
request mlp_fp16_sent 00 'inputs { name: "input" datatype: "FP16" shape: [1, 4] } raw_input_contents: "\000<\000<\000<\000<"'
request mlp_batch_zero 00 'inputs { name: "input" datatype: "FP32" shape: [0, 4] } raw_input_contents: ""'
request mlp_mixed_contents 00 "inputs { name: \"input\" datatype: \"FP32\" shape: [1, 4] contents { fp32_contents: [1, 2, 3, 4] } } raw_input_contents: \"$f32x8\""
request mlp_huge_shape 00 'inputs { name: "input" datatype: "FP32" shape: [1, 9223372036854775807] } raw_input_contents: "\000\000\000\000"'
request cnn_fp32_out 01 'inputs { name: "input" datatype: "FP16" shape: [1, 1, 4, 4] } raw_input_contents: "\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<\000<" outputs { name: "logits" parameters { key: "datatype" value { string_param: "FP32" } } }'
request gpt_typed 02 'inputs { name: "tokens" datatype: "INT64" shape: [1, 8] contents { int64_contents: [1, 2, 3, 4, 5, 6, 7, 8] } } parameters { key: "output_datatype" value { string_param: "FP32" } }'
request gpt_wrong_field 02 'inputs { name: "tokens" datatype: "INT64" shape: [1, 8] contents { fp32_contents: [1, 2, 3, 4, 5, 6, 7, 8] } }'
request two_inputs 03 "inputs { name: \"b\" datatype: \"INT64\" shape: [1, 3] } inputs { name: \"a\" datatype: \"FP32\" shape: [1, 2, 2] } raw_input_contents: \"\\001\\000\\000\\000\\000\\000\\000\\000\\002\\000\\000\\000\\000\\000\\000\\000\\003\\000\\000\\000\\000\\000\\000\\000\" raw_input_contents: \"\\000\\000\\200?\\000\\000\\000@\\000\\000@@\\000\\000\\200@\" outputs { name: \"ids\" } outputs { name: \"y\" }"
request two_inputs_batch_mismatch 03 'inputs { name: "a" datatype: "FP32" shape: [2, 1, 2] contents { fp32_contents: [1, 2, 3, 4] } } inputs { name: "b" datatype: "INT64" shape: [1, 3] contents { int64_contents: [1, 2, 3] } }'

# idx_fuzzer: whole IDX files, plain and gzipped.
idx=$corpus/idx_fuzzer
printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x02\x01\x02\x03\x04\x05\x06\x07\x08' >"$idx/images_2x2x2"
gzip -9n <"$idx/images_2x2x2" >"$idx/images_2x2x2.gz"
printf '\x00\x00\x08\x01\x00\x00\x00\x03\x00\x01\x09' >"$idx/labels_3"
printf '\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00' >"$idx/huge_header"
printf '\x00\x00\x08\x01\x00\x00\x00\x05\x00' >"$idx/truncated"
# A gzipped header claiming 60000 28x28 images (47 MB) with no pixels.
printf '\x00\x00\x08\x03\x00\x00\xea\x60\x00\x00\x00\x1c\x00\x00\x00\x1c' | gzip -9n >"$idx/header_over_file.gz"
printf '\x00\x00\x09\x03' >"$idx/bad_magic"

# csv_fuzzer: whole CSV files.
csv=$corpus/csv_fuzzer
printf 'a,b,label\n1,2,0\n3,4,1\n5,6,2\n7,8,1\n' >"$csv/integer_labels"
printf 'x,"y",label\r\n1.5,-2,setosa\r\n3,4e3,versicolor\r\n\r\n5,6,virginica\r\n0,0,setosa\r\n' >"$csv/string_labels"
printf 'a,label\n1,9223372036854775807\n2,1\n' >"$csv/huge_label"
printf 'a,label\n1,0\n2\n' >"$csv/short_row"
printf 'a,label\nnan,0\ninf,1\n' >"$csv/not_finite"
printf 'only\n1\n' >"$csv/one_column"

# token_file_fuzzer: [vocab byte (0 = 65536)][seq_len byte][uint16 tokens].
tokens=$corpus/token_file_fuzzer
printf '\x00\x03\x01\x00\x02\x00\x03\x00\x04\x00\x05\x00\x06\x00\x07\x00\x08\x00\xff\xff' >"$tokens/full_vocab"
printf '\x10\x01\x01\x00\x02\x00\x0f\x00\x00\x00' >"$tokens/small_vocab"
printf '\x10\x01\x01\x00\x20\x00' >"$tokens/token_over_vocab"
printf '\x00\x0f\x01\x00\x02' >"$tokens/odd_size"

# job_spec_fuzzer: serialized mantissa.v1.JobSpec.
spec() { encode mantissa.v1.JobSpec mantissa/v1/training.proto <<<"$2" >"$corpus/job_spec_fuzzer/$1"; }
spec mlp_synthetic 'model: "mlp" dataset: "synthetic" precision: "bf16-mixed" steps: 10 batch_size: 8'
spec cnn_sgd 'model: "cnn" dataset: "synthetic" optimizer: "sgd" momentum: 0.9 nesterov: true lr: 0.1 epochs: 2 lr_schedule: "cosine" warmup_steps: 2'
spec gpt_tokens 'model: "gpt" model_options { key: "layers" value: "2" } dataset: "synthetic-tokens" dataset_options { key: "seq_len" value: "16" } precision: "32-true" accumulate_grad_batches: 4 steps: 100'
spec csv_options 'model: "mlp" dataset: "csv" dataset_options { key: "path" value: "/etc/hostname" } dataset_options { key: "test_fraction" value: "0.5" }'
spec fp8_on_cpu 'model: "mlp" dataset: "synthetic" precision: "transformer-engine" fp8 { fp8_format: "HYBRID" margin: 1 }'
spec scaler 'model: "mlp" dataset: "synthetic" precision: "16-mixed" grad_scaler { init_scale: 1024 growth_interval: 10 }'
spec huge_steps 'model: "mlp" dataset: "synthetic" steps: 4611686018427387904 accumulate_grad_batches: 4'
spec empty ''

# kserve_json_fuzzer: [2 bytes LE Inference-Header-Content-Length, ffff = none][body].
kserve=$corpus/kserve_json_fuzzer
printf '\xff\xff{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],"outputs":[{"name":"x","parameters":{"binary_data":true}}]}' >"$kserve/nested_fp32"
printf '\xff\xff{"id":"a","parameters":{"binary_data_output":true},"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["ab",""]},{"name":"h","shape":[1],"datatype":"FP16","data":[0.1]},{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}]}' >"$kserve/bytes_fp16_bool"
printf '\x5b\x00{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}\x00\x00\xc0\x3f\x00\x00\x00\xc0' >"$kserve/binary_fp32"
printf '\xff\xff{"inputs":[{"name":"i","shape":[3],"datatype":"INT8","data":[-128,0,127]},{"name":"u","shape":[1,1],"datatype":"UINT64","data":[[18446744073709551615]]}]}' >"$kserve/ints"
printf '\xff\xff{"par":[NaNe-70,2e-7nspa:' >"$kserve/nan_exponent"  # found by the fuzzer: RapidJSON 1.1's NaN extension
# found by the fuzzer: RapidJSON 1.1's full-precision strtod read out of bounds
printf '\xff\xff{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[-333333333333.33333333000000000149448e-00350]}]}' >"$kserve/long_number"
