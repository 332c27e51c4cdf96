// Instruction count of kvshm_get hits through the C ABI. Build and run under callgrind:
//   cargo build --release -p kvshm-ffi
//   gcc -O2 -I bindings/ffi/include bindings/ffi/examples/get_loop.c -L target/release -lkvshm -o /tmp/get_loop
//   LD_LIBRARY_PATH=target/release valgrind --tool=callgrind /tmp/get_loop cg-get 110000
// (difference of two runs, 110000 and 10000 gets, over 100000 = instructions per get).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvshm.h"
int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cg-get";
    long n = argc > 2 ? atol(argv[2]) : 100000;
    kvshm_config cfg; kvshm_config_default(&cfg);
    kvshm_host *h = NULL;
    if (kvshm_host_create(name, &cfg, &h) != KVSHM_OK) { fprintf(stderr, "create\n"); return 1; }
    kvshm_client *c = NULL;
    if (kvshm_client_open(name, NULL, &c) != KVSHM_OK) { fprintf(stderr, "open\n"); return 1; }
    char key[16], val[100], buf[200];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 1000; i++) { snprintf(key, sizeof key, "key-%08d", i); kvshm_put(c, (const uint8_t*)key, 12, (const uint8_t*)val, 100); }
    size_t len = 0; long hits = 0;
    for (long i = 0; i < n; i++) {
        snprintf(key, sizeof key, "key-%08ld", i % 1000);
        if (kvshm_get(c, (const uint8_t*)key, 12, (uint8_t*)buf, sizeof buf, &len) == KVSHM_OK) hits++;
    }
    printf("%ld hits\n", hits);
    kvshm_client_close(c);
    kvshm_host_release(h);
    return 0;
}
