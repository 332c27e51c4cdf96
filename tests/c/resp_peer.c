/* A C client of a kvshm store for the RESP tests: `resp_peer DIR NAME get KEY` prints the
 * value of KEY as hex; `resp_peer DIR NAME put KEY HEXVALUE` stores it. Through libkvshm.so,
 * i.e. shared memory, never the network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvshm.h"

static size_t unhex(const char *h, uint8_t *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned int b;
        if (sscanf(h + 2 * i, "%2x", &b) != 1) exit(3);
        out[i] = (uint8_t)b;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: resp_peer DIR NAME get KEY | put KEY HEXVALUE\n");
        return 2;
    }
    kvshm_client *c = NULL;
    kvshm_status st = kvshm_client_open(argv[2], argv[1], &c);
    if (st != KVSHM_OK) {
        fprintf(stderr, "open: %s\n", kvshm_strerror(st));
        return 1;
    }
    const uint8_t *key = (const uint8_t *)argv[4];
    size_t key_len = strlen(argv[4]);
    int rc = 0;
    if (strcmp(argv[3], "get") == 0) {
        static uint8_t buf[1 << 20];
        size_t len = 0;
        st = kvshm_get(c, key, key_len, buf, sizeof buf, &len);
        if (st != KVSHM_OK) {
            fprintf(stderr, "get: %s\n", kvshm_strerror(st));
            rc = 1;
        } else {
            for (size_t i = 0; i < len; i++) printf("%02x", buf[i]);
            printf("\n");
        }
    } else if (strcmp(argv[3], "put") == 0 && argc == 6) {
        static uint8_t val[1 << 20];
        size_t n = unhex(argv[5], val);
        st = kvshm_put(c, key, key_len, val, n);
        if (st != KVSHM_OK) {
            fprintf(stderr, "put: %s\n", kvshm_strerror(st));
            rc = 1;
        }
    } else {
        rc = 2;
    }
    kvshm_client_close(c);
    return rc;
}
