# The table of hostile and malformed inputs: it_bad_inputs reads the rows
# from docs/BAD-INPUTS.md itself, so the document and the test are one table.
chunkd_integration_test(it_bad_inputs TIMEOUT 300)
target_sources(it_bad_inputs PRIVATE ${CMAKE_CURRENT_LIST_DIR}/bad_inputs_table.c)
get_filename_component(_chunkd_bad_inputs_doc
  ${CMAKE_CURRENT_LIST_DIR}/../../docs/BAD-INPUTS.md ABSOLUTE)
set_property(TEST it_bad_inputs APPEND PROPERTY ENVIRONMENT
  CHUNKD_BAD_INPUTS_DOC=${_chunkd_bad_inputs_doc})
