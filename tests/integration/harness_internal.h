/* Shared between the harness's own files; tests use harness.h only. */
#ifndef CHUNKD_IT_HARNESS_INTERNAL_H
#define CHUNKD_IT_HARNESS_INTERNAL_H

int it_db_connect(void);
void it_db_disconnect(void);
int it_redis_connect(void);
void it_redis_disconnect(void);
/* KEY=value lines into this process's environment, replacing what is there. */
int it_load_env_file(const char *path);

#endif
