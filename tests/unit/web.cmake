# Unit tests of the web transports: WebSocket framing and handshake, HTTP
# request heads and static file resolution (no sockets, no backends).
set(_wu ${CMAKE_CURRENT_LIST_DIR})

foreach(_m ws http)
  chunkd_test(test_${_m} SOURCES ${_wu}/test_${_m}.c
    LIBS chunkd_core LABELS "unit;server;web")
endforeach()
