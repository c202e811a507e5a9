# chunkctl's operator commands (uploads, show, fail, expire) against a real
# chunkd and the test stack. Included from CMakeLists.txt, where
# chunkd_integration_test is defined.
chunkd_integration_test(it_chunkctl_uploads TIMEOUT 300)
