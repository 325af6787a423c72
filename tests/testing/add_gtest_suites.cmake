# Included by ctest (TEST_INCLUDE_FILES): registers one ctest entry per
# GoogleTest suite of TEST_BINARY, run as `TEST_BINARY --gtest_filter=Suite.*`.
# A suite is one process, so a suite's SetUpTestSuite (one mantissad, one
# loaded model) is shared by its cases, and the binary's start-up (LibTorch's
# is half a second) is paid once per suite, not once per case.
#
# Set by the including file (mantissa_test in tests/CMakeLists.txt):
# TEST_TARGET, TEST_BINARY, TEST_LIST (where --gtest_list_tests is cached),
# TEST_WORKING_DIR, TEST_PROPERTIES (for every suite) and TEST_COSTS
# ("Suite=seconds" items: expensive suites start first).
if(NOT EXISTS "${TEST_BINARY}")
  add_test(${TEST_TARGET}_NOT_BUILT ${TEST_TARGET}_NOT_BUILT)
  return()
endif()

# The suite names are cached until the binary changes; the registrations are
# made afresh each time, so property edits need no rebuild.
if(NOT EXISTS "${TEST_LIST}" OR "${TEST_BINARY}" IS_NEWER_THAN "${TEST_LIST}")
  execute_process(
    COMMAND "${TEST_BINARY}" --gtest_list_tests
    WORKING_DIRECTORY "${TEST_WORKING_DIR}"
    OUTPUT_FILE "${TEST_LIST}"
    RESULT_VARIABLE result
    TIMEOUT 60)
  if(NOT result EQUAL 0)
    file(REMOVE "${TEST_LIST}")
    message(FATAL_ERROR "${TEST_BINARY} --gtest_list_tests failed: ${result}")
  endif()
endif()

# Suite lines start in column 0 and end in "." (then maybe "  # TypeParam");
# case lines are indented.
file(STRINGS "${TEST_LIST}" lines REGEX "^[A-Za-z0-9_/]+\\.")
set(registrations "")
foreach(line IN LISTS lines)
  string(REGEX MATCH "^[A-Za-z0-9_/]+" suite "${line}")
  set(cost "")
  foreach(item IN LISTS TEST_COSTS)
    if(item MATCHES "^${suite}=(.*)$")
      set(cost "COST ${CMAKE_MATCH_1}")
    endif()
  endforeach()
  string(APPEND registrations
    "add_test([==[${suite}]==] [==[${TEST_BINARY}]==] [==[--gtest_filter=${suite}.*]==])\n"
    "set_tests_properties([==[${suite}]==] PROPERTIES WORKING_DIRECTORY "
    "[==[${TEST_WORKING_DIR}]==] ${TEST_PROPERTIES} ${cost})\n")
endforeach()
cmake_language(EVAL CODE "${registrations}")
