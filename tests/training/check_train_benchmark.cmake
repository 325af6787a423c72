# Smoke check of mantissa_train_benchmark (cmake -P, no Python needed):
#   cmake -DBENCHMARK=<binary> "-DARGS=--device=cpu --scale=0.02 ..." -P check_train_benchmark.cmake
# Runs it with --json_only and requires exit status 0, every output line a
# JSON object, every line either "skipped" (with a reason) or a measurement
# with all fields present and step_ms > 0, and at least one measurement per
# workload named in the output.
cmake_minimum_required(VERSION 3.19)  # string(JSON)

if(NOT BENCHMARK)
  message(FATAL_ERROR "set -DBENCHMARK=<path to mantissa_train_benchmark>")
endif()
separate_arguments(args UNIX_COMMAND "${ARGS}")
execute_process(
  COMMAND "${BENCHMARK}" ${args} --json_only
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  RESULT_VARIABLE rc)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mantissa_train_benchmark exited with ${rc}:\n${err}")
endif()

set(measured_fields
  workload precision effective_precision device step_ms items_per_s peak_alloc_mib tflops
  fabric_step_ms fabric_peak_mib speedup_vs_fabric final_loss parameters)
set(positive_fields step_ms items_per_s peak_alloc_mib tflops parameters)

string(REPLACE ";" "\\;" out "${out}")
string(REPLACE "\n" ";" lines "${out}")
set(workloads)
set(measured_workloads)
set(count 0)
foreach(line IN LISTS lines)
  if(line STREQUAL "")
    continue()
  endif()
  math(EXPR count "${count} + 1")
  string(JSON type ERROR_VARIABLE json_error TYPE "${line}")
  if(json_error OR NOT type STREQUAL "OBJECT")
    message(FATAL_ERROR "not a JSON object: ${line}\n${json_error}")
  endif()
  string(JSON workload ERROR_VARIABLE json_error GET "${line}" workload)
  if(json_error)
    message(FATAL_ERROR "no workload: ${line}")
  endif()
  list(APPEND workloads "${workload}")
  string(JSON skipped ERROR_VARIABLE json_error GET "${line}" skipped)
  if(NOT json_error)
    if(skipped STREQUAL "")
      message(FATAL_ERROR "skipped without a reason: ${line}")
    endif()
    continue()
  endif()
  foreach(field IN LISTS measured_fields)
    string(JSON field_type ERROR_VARIABLE json_error TYPE "${line}" ${field})
    if(json_error)
      message(FATAL_ERROR "field ${field} missing: ${line}")
    endif()
  endforeach()
  foreach(field IN LISTS positive_fields)
    string(JSON value GET "${line}" ${field})
    if(NOT value GREATER 0)
      message(FATAL_ERROR "${field} is ${value}, not > 0: ${line}")
    endif()
  endforeach()
  string(JSON loss_type TYPE "${line}" final_loss)
  if(NOT loss_type STREQUAL "NUMBER")
    message(FATAL_ERROR "final_loss is not a finite number: ${line}")
  endif()
  list(APPEND measured_workloads "${workload}")
endforeach()

if(count EQUAL 0)
  message(FATAL_ERROR "no output lines")
endif()
list(REMOVE_DUPLICATES workloads)
foreach(workload IN LISTS workloads)
  if(NOT workload IN_LIST measured_workloads)
    message(FATAL_ERROR "no measured line for workload ${workload}")
  endif()
endforeach()
message(STATUS "${count} lines, measured workloads: ${measured_workloads}")
