# The test stack: a private Redis and MariaDB that scripts/stack.sh starts
# before the first test that needs them and stops after the last one.
#
# Each build folder has its own stack folder and ports, so the plain, ASan and
# TSan builds can run their suites at the same time (test.sh passes
# 16390/13390, 16391/13391 and 16392/13392). stack_up starts from empty data
# (--fresh) so no run sees rows or keys of an earlier one; stack_down keeps the
# folder, logs included, for a look after a failure.
#
# Integration tests call chunkd_use_test_stack(name...) and then find the
# server settings in the file named by $CHUNKD_TEST_STACK_ENV (KEY=value
# lines, see docs/SETUP.md).

set(CHUNKD_TEST_REDIS_PORT 16390 CACHE STRING "Redis port of the test stack")
set(CHUNKD_TEST_MYSQL_PORT 13390 CACHE STRING "MariaDB port of the test stack")
set(CHUNKD_TEST_STACK_DIR ${CMAKE_BINARY_DIR}/test-stack)
set(CHUNKD_TEST_STACK_ENV ${CHUNKD_TEST_STACK_DIR}/stack.env)

find_program(CHUNKD_BASH bash REQUIRED)
get_filename_component(_chunkd_stack_sh ${CMAKE_CURRENT_LIST_DIR}/../../scripts/stack.sh ABSOLUTE)
set(_chunkd_stack_env
  CHUNKD_STACK_DIR=${CHUNKD_TEST_STACK_DIR}
  CHUNKD_STACK_REDIS_PORT=${CHUNKD_TEST_REDIS_PORT}
  CHUNKD_STACK_MYSQL_PORT=${CHUNKD_TEST_MYSQL_PORT})

add_test(NAME stack_up COMMAND ${CHUNKD_BASH} ${_chunkd_stack_sh} up --fresh)
add_test(NAME stack_down COMMAND ${CHUNKD_BASH} ${_chunkd_stack_sh} down)
set_tests_properties(stack_up PROPERTIES
  FIXTURES_SETUP test_stack ENVIRONMENT "${_chunkd_stack_env}" TIMEOUT 180)
set_tests_properties(stack_down PROPERTIES
  FIXTURES_CLEANUP test_stack ENVIRONMENT "${_chunkd_stack_env}" TIMEOUT 180)

# Makes each named test wait for the stack and tells it where the env file is.
function(chunkd_use_test_stack)
  foreach(t IN LISTS ARGN)
    set_property(TEST ${t} APPEND PROPERTY FIXTURES_REQUIRED test_stack)
    set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT
      CHUNKD_TEST_STACK_ENV=${CHUNKD_TEST_STACK_ENV})
  endforeach()
endfunction()

# chunkctl against the stack: every command and what it leaves in MySQL.
if(TARGET chunkctl)
  get_filename_component(_chunkd_ctl_test ${CMAKE_CURRENT_LIST_DIR}/../../src/ctl/ctl_test.sh
    ABSOLUTE)
  add_test(NAME chunkctl_users COMMAND ${CHUNKD_BASH} ${_chunkd_ctl_test} $<TARGET_FILE:chunkctl>)
  chunkd_use_test_stack(chunkctl_users)
endif()
