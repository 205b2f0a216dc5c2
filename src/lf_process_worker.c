/* lf_process_worker.c — placeholder until the process pool lands. */
#include <stdio.h>
#include "lf_process.h"
int lf_process_worker_main(int argc, char **argv) {
  (void)argc; (void)argv;
  fputs("lua-futures: worker mode is not available in this build\n", stderr);
  return 1;
}
