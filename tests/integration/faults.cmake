# Fault tests: chunkd killed or stopped in the middle of uploads, Redis and
# MariaDB restarted or losing their data, a full disk, the expiry sweep with
# two instances. Real processes, like the other integration tests; a program
# that stops Redis or MariaDB does it to a private stack of its own
# (harness_fault.h), never to the shared one, so it can run beside the rest.

# Private stacks, chunkup runs and log probes for these programs.
target_sources(it_harness PRIVATE ${CMAKE_CURRENT_LIST_DIR}/harness_fault.c)

get_filename_component(_chunkd_fault_stack_sh ${CMAKE_CURRENT_LIST_DIR}/../../scripts/stack.sh
  ABSOLUTE)

# chunkd_fault_test(NAME TIMEOUT SECONDS)
function(chunkd_fault_test name)
  cmake_parse_arguments(F "" "TIMEOUT" "" ${ARGN})
  chunkd_integration_test(${name} TIMEOUT ${F_TIMEOUT} LABELS faults)
  set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT
    CHUNKD_STACK_SH=${_chunkd_fault_stack_sh})
endfunction()

chunkd_fault_test(it_fault_crash TIMEOUT 300)
chunkd_fault_test(it_fault_disk TIMEOUT 300)
# Its own Redis and MariaDB, on the shared stack's ports + 20.
chunkd_fault_test(it_fault_stack TIMEOUT 600)
# Its own MariaDB started with the auto-increment settings of a Galera node
# (stack.sh's CHUNKD_STACK_MYSQL_OPTS), on the shared stack's ports + 30.
chunkd_fault_test(it_autoinc TIMEOUT 300)
