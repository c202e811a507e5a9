# it_scale: the deployment's cluster (deploy/) on loopback. HAProxy runs
# deploy/haproxy.cfg itself and every chunkd instance gets deploy/cluster.env,
# so this test and docker-compose.yml describe one cluster (tests/deploy
# checks that this file keeps handing those files over). Included from
# CMakeLists.txt beside it, after chunkd_integration_test is defined.

find_program(CHUNKD_HAPROXY haproxy PATHS /usr/sbin /sbin)
if(NOT CHUNKD_HAPROXY)
  message(WARNING "haproxy not found: it_scale is not built (Debian package haproxy)")
  return()
endif()

get_filename_component(_scale_deploy ${CMAKE_CURRENT_LIST_DIR}/../../deploy ABSOLUTE)

# The cluster, its stats reader and the persistent client: a library, so
# later tests can drive the cluster too.
add_library(it_haproxy_cluster STATIC
  ${CMAKE_CURRENT_LIST_DIR}/haproxy_client.c
  ${CMAKE_CURRENT_LIST_DIR}/haproxy_cluster.c
  ${CMAKE_CURRENT_LIST_DIR}/haproxy_stats.c)
target_link_libraries(it_haproxy_cluster PUBLIC it_harness)

chunkd_integration_test(it_scale TIMEOUT 600 LABELS scale)
target_link_libraries(it_scale PRIVATE it_haproxy_cluster)
set_property(TEST it_scale APPEND PROPERTY ENVIRONMENT
  CHUNKD_HAPROXY_BIN=${CHUNKD_HAPROXY}
  CHUNKD_HAPROXY_CFG=${_scale_deploy}/haproxy.cfg
  CHUNKD_CLUSTER_ENV=${_scale_deploy}/cluster.env
  CHUNKD_HEALTHCHECK=${_scale_deploy}/chunkd-healthcheck.sh)
# Heavy (three servers, HAProxy, 50 clients, ~130 MB): alone, not beside
# the other integration programs on a two-core machine.
set_tests_properties(it_scale PROPERTIES RUN_SERIAL TRUE)
