# client library unit tests
set(_cu ${CMAKE_CURRENT_LIST_DIR})

chunkd_test(test_client_state SOURCES ${_cu}/test_client_state.c
  LIBS chunkup_cli LABELS "unit;client")
chunkd_test(test_client_cli SOURCES ${_cu}/test_client_cli.c
  LIBS chunkup_cli LABELS "unit;client")
chunkd_test(test_client_progress SOURCES ${_cu}/test_client_progress.c
  LIBS chunkup_cli LABELS "unit;client")
# Against a scripted loopback peer (no chunkd, no Redis, no MySQL).
find_package(Threads REQUIRED)
chunkd_test(test_client_proto
  SOURCES ${_cu}/test_client_proto.c ${_cu}/test_client_peer.c
  LIBS chunkup_client Threads::Threads LABELS "unit;client")
# The chunkup command end to end against an in-memory protocol peer.
chunkd_test(test_client_cmd
  SOURCES ${_cu}/test_client_cmd.c ${_cu}/test_client_fake_chunkd.c ${_cu}/test_client_peer.c
  LIBS chunkup_client Threads::Threads LABELS "unit;client")
target_compile_definitions(test_client_cmd PRIVATE CHUNKUP_BIN="$<TARGET_FILE:chunkup>")
add_dependencies(test_client_cmd chunkup)
