# server module unit tests: one program per module, linked against the
# library that holds every server module.
set(_su ${CMAKE_CURRENT_LIST_DIR})

foreach(_m proto msg config storage storage_layout auth util upload_session syncer fs_sync
    offset_saver)
  chunkd_test(test_${_m} SOURCES ${_su}/test_${_m}.c
    LIBS chunkd_core LABELS "unit;server")
endforeach()
