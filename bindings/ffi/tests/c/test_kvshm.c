/* Exercises every function of the C ABI, two processes (fork) sharing a store, and every
 * status a C caller can provoke. Prints one line per failed check and a final
 * "N passed, M failed" line; exits non-zero on any failure.
 * Usage: test_kvshm <unique-store-name> */
#define _POSIX_C_SOURCE 200809L
#include "kvshm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            passed++;                                                                  \
        } else {                                                                       \
            failed++;                                                                  \
            char msg_[256];                                                            \
            kvshm_last_error(msg_, sizeof msg_);                                       \
            printf("FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, msg_); \
        }                                                                              \
    } while (0)
#define B(s) (const uint8_t *)(s), strlen(s)
/* A check in a loop: counted once if every iteration holds. */
#define CHECK_QUIET(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            CHECK(cond);                                                               \
        }                                                                              \
    } while (0)

static char name[200], name2[200];
static kvshm_client *inherited; /* the parent's client, inherited by fork */

static void child_writer(void) {
    /* The parent's client is not ours: refused, and closing it touches nothing shared. */
    uint8_t b0[8];
    size_t l0 = 0;
    if (kvshm_put(inherited, B("from-inherited"), B("x")) != KVSHM_FORKED) _exit(14);
    if (kvshm_get(inherited, B("parent-key"), b0, sizeof b0, &l0) != KVSHM_FORKED) _exit(15);
    if (kvshm_client_close(inherited) != KVSHM_OK) _exit(16);
    kvshm_client *c = NULL;
    if (kvshm_client_open(name, NULL, &c) != KVSHM_OK) _exit(10);
    for (int i = 0; i < 100; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "child-%d", i);
        snprintf(v, sizeof v, "from-child-%d", i);
        if (kvshm_put(c, B(k), B(v)) != KVSHM_OK) _exit(11);
    }
    uint8_t buf[64];
    size_t len = 0;
    /* The parent wrote this before forking: visible here. */
    if (kvshm_get(c, B("parent-key"), buf, sizeof buf, &len) != KVSHM_OK) _exit(12);
    if (len != 12 || memcmp(buf, "parent-value", 12) != 0) _exit(13);
    kvshm_client_close(c);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s STORE-NAME\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "%s", argv[1]);
    snprintf(name2, sizeof name2, "%s-small", argv[1]);

    /* strerror: every status has a message, unknown values too. */
    for (int s = KVSHM_OK; s <= KVSHM_READ_ONLY; s++) CHECK(kvshm_strerror(s) && strlen(kvshm_strerror(s)) > 0);
    CHECK(strcmp(kvshm_strerror(999), "unknown status") == 0);

    kvshm_config cfg;
    CHECK(kvshm_config_default(&cfg) == KVSHM_OK);
    CHECK(cfg.max_key_len == 1024 && cfg.stripes == 1024 && cfg.mode == 0600);
    cfg.max_key_len = 16;
    cfg.max_value_len = 64;
    kvshm_host *host = NULL;
    CHECK(kvshm_host_create(name, &cfg, &host) == KVSHM_OK);
    kvshm_host *dup = NULL;
    CHECK(kvshm_host_create(name, &cfg, &dup) == KVSHM_EXISTS);
    CHECK(kvshm_host_open_existing(name, NULL, &dup) == KVSHM_HOST_RUNNING);

    kvshm_client *hc = NULL;
    CHECK(kvshm_host_client(host, &hc) == KVSHM_OK);
    CHECK(kvshm_put(hc, B("parent-key"), B("parent-value")) == KVSHM_OK);
    inherited = hc;

    /* A second process writes; we see its keys at once. */
    pid_t pid = fork();
    if (pid == 0) child_writer();
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    kvshm_client *c = NULL;
    CHECK(kvshm_client_open(name, NULL, &c) == KVSHM_OK);
    uint8_t buf[128];
    size_t len = 0;
    CHECK(kvshm_get(c, B("child-99"), buf, sizeof buf, &len) == KVSHM_OK);
    CHECK(len == 13 && memcmp(buf, "from-child-99", 13) == 0);
    uint64_t n = 0;
    CHECK(kvshm_len(c, &n) == KVSHM_OK && n == 101);

    /* get: missing key, buffer too small (reports the length), length query with NULL. */
    CHECK(kvshm_get(c, B("nope"), buf, sizeof buf, &len) == KVSHM_NOT_FOUND);
    len = 0;
    CHECK(kvshm_get(c, B("child-1"), buf, 3, &len) == KVSHM_BUFFER_TOO_SMALL && len == 12);
    CHECK(kvshm_get(c, B("child-1"), NULL, 0, &len) == KVSHM_BUFFER_TOO_SMALL && len == 12);

    /* Binary keys and values, empty value. */
    const uint8_t bk[4] = {0, 255, 1, 0}, bv[3] = {0, 0, 7};
    CHECK(kvshm_put(c, bk, 4, bv, 3) == KVSHM_OK);
    CHECK(kvshm_get(c, bk, 4, buf, sizeof buf, &len) == KVSHM_OK && len == 3 && memcmp(buf, bv, 3) == 0);
    CHECK(kvshm_put(c, B("empty"), NULL, 0) == KVSHM_OK);
    CHECK(kvshm_get(c, B("empty"), buf, sizeof buf, &len) == KVSHM_OK && len == 0);

    /* versions, conditional writes, counters (issue 13) */
    uint64_t v1 = 0, v2 = 0, cur = 99;
    CHECK(kvshm_put_if_version(c, B("cas"), B("one"), 0, &v1, &cur) == KVSHM_OK && v1 != 0);
    CHECK(kvshm_put_if_version(c, B("cas"), B("two"), 0, &v2, &cur) == KVSHM_CONFLICT && cur == v1);
    CHECK(kvshm_put_if_version(c, B("cas"), B("two"), v1, &v2, &cur) == KVSHM_OK && v2 > v1);
    uint64_t ver = 0;
    CHECK(kvshm_get_versioned(c, B("cas"), buf, sizeof buf, &len, &ver) == KVSHM_OK && len == 3 &&
          memcmp(buf, "two", 3) == 0 && ver == v2);
    CHECK(kvshm_remove_if_version(c, B("cas"), v1, &cur) == KVSHM_CONFLICT && cur == v2);
    CHECK(kvshm_remove_if_version(c, B("cas"), v2, &cur) == KVSHM_OK);
    CHECK(kvshm_remove_if_version(c, B("cas"), v2, &cur) == KVSHM_CONFLICT && cur == 0);
    CHECK(kvshm_get_versioned(c, B("cas"), buf, sizeof buf, &len, &ver) == KVSHM_NOT_FOUND);
    bool stored_ok = false;
    CHECK(kvshm_put_if_absent(c, B("once"), B("a"), &stored_ok) == KVSHM_OK && stored_ok);
    CHECK(kvshm_put_if_absent(c, B("once"), B("b"), &stored_ok) == KVSHM_OK && !stored_ok);
    size_t alen = 0;
    CHECK(kvshm_append(c, B("once"), B("bc"), &alen) == KVSHM_OK && alen == 3);
    int64_t n64 = 0;
    CHECK(kvshm_incr(c, B("once"), 1, &n64) == KVSHM_NOT_AN_INTEGER);
    CHECK(kvshm_put(c, B("max"), B("9223372036854775807")) == KVSHM_OK);
    CHECK(kvshm_incr(c, B("max"), 1, &n64) == KVSHM_OVERFLOW);
    CHECK(kvshm_replace(c, B("once"), B("x"), &stored_ok) == KVSHM_OK && stored_ok);
    CHECK(kvshm_replace(c, B("none"), B("x"), &stored_ok) == KVSHM_OK && !stored_ok);
    {
        uint64_t vo = 0;
        CHECK(kvshm_get_versioned(c, B("once"), buf, sizeof buf, &len, &vo) == KVSHM_OK);
        kvshm_bytes chk[2] = {{(const uint8_t *)"once", 4}, {(const uint8_t *)"none", 4}};
        uint64_t want[2] = {vo, 0};
        kvshm_bytes pk[1] = {{(const uint8_t *)"txn-a", 5}}, pv[1] = {{(const uint8_t *)"1", 1}};
        kvshm_bytes rk[1] = {{(const uint8_t *)"once", 4}};
        size_t failed_at = 9;
        uint64_t found = 9;
        bool present = false;
        want[1] = vo; /* "none" is absent: this check fails */
        CHECK(kvshm_commit_if(c, chk, want, 2, pk, pv, 1, rk, 1, &failed_at, &found) == KVSHM_CONFLICT &&
              failed_at == 1 && found == 0);
        CHECK(kvshm_contains(c, B("txn-a"), &present) == KVSHM_OK && !present);
        want[1] = 0;
        CHECK(kvshm_commit_if(c, chk, want, 2, pk, pv, 1, rk, 1, NULL, NULL) == KVSHM_OK);
        CHECK(kvshm_contains(c, B("txn-a"), &present) == KVSHM_OK && present);
        CHECK(kvshm_contains(c, B("once"), &present) == KVSHM_OK && !present);
        CHECK(kvshm_commit_if(c, NULL, NULL, 0, NULL, NULL, 0, pk, 1, NULL, NULL) == KVSHM_OK);
        CHECK(kvshm_put(c, B("once"), B("again")) == KVSHM_OK);
    }
    /* expiry (issue 14) */
    {
        int64_t left = 0;
        bool flag = false;
        CHECK(kvshm_put_ttl(c, B("ttl-k"), B("v"), 0) == KVSHM_INVALID_ARGUMENT);
        CHECK(kvshm_put_ttl(c, B("ttl-k"), B("v"), 100) == KVSHM_OK);
        CHECK(kvshm_ttl(c, B("ttl-k"), &left) == KVSHM_OK && left > 0 && left <= 100);
        CHECK(kvshm_persist(c, B("ttl-k"), &flag) == KVSHM_OK && flag);
        CHECK(kvshm_ttl(c, B("ttl-k"), &left) == KVSHM_OK && left == -1);
        CHECK(kvshm_expire(c, B("ttl-k"), 50, &flag) == KVSHM_OK && flag);
        CHECK(kvshm_expire(c, B("no-such"), 50, &flag) == KVSHM_OK && !flag);
        struct timespec nap = {0, 80 * 1000 * 1000};
        nanosleep(&nap, NULL);
        CHECK(kvshm_get(c, B("ttl-k"), buf, sizeof buf, &len) == KVSHM_NOT_FOUND);
        CHECK(kvshm_ttl(c, B("ttl-k"), &left) == KVSHM_NOT_FOUND);
        /* Counted until an expiry pass (or a remove, which reports it absent) takes it out. */
        CHECK(kvshm_remove(c, B("ttl-k"), &flag) == KVSHM_OK && !flag);
    }
    /* Two processes increment one counter; a third waits for it to change. */
    CHECK(kvshm_incr(c, B("ctr"), 0, &n64) == KVSHM_OK && n64 == 0);
    uint64_t ctr_ver = 0;
    CHECK(kvshm_get_versioned(c, B("ctr"), buf, sizeof buf, &len, &ctr_ver) == KVSHM_OK);
    pid_t waiter = fork();
    if (waiter == 0) {
        kvshm_client *w = NULL;
        bool ch = false;
        uint64_t nv = 0;
        if (kvshm_client_open(name, NULL, &w) != KVSHM_OK) _exit(20);
        if (kvshm_wait_changed(w, B("ctr"), ctr_ver, 30000, &ch, &nv) != KVSHM_OK) _exit(21);
        kvshm_client_close(w);
        _exit(ch && nv > ctr_ver ? 0 : 22);
    }
    pid_t incr = fork();
    if (incr == 0) {
        kvshm_client *w = NULL;
        if (kvshm_client_open(name, NULL, &w) != KVSHM_OK) _exit(30);
        for (int i = 0; i < 1000; i++)
            if (kvshm_incr(w, B("ctr"), 1, NULL) != KVSHM_OK) _exit(31);
        kvshm_client_close(w);
        _exit(0);
    }
    for (int i = 0; i < 1000; i++) CHECK_QUIET(kvshm_incr(c, B("ctr"), 2, NULL) == KVSHM_OK);
    CHECK(waitpid(incr, &st, 0) == incr && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(waitpid(waiter, &st, 0) == waiter && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(kvshm_incr(c, B("ctr"), 0, &n64) == KVSHM_OK && n64 == 3000);
    bool ch = true;
    CHECK(kvshm_get_versioned(c, B("ctr"), buf, sizeof buf, &len, &ctr_ver) == KVSHM_OK);
    CHECK(kvshm_wait_changed(c, B("ctr"), ctr_ver, 50, &ch, &ver) == KVSHM_OK && !ch && ver == ctr_ver);
    CHECK(kvshm_remove(c, B("ctr"), NULL) == KVSHM_OK && kvshm_remove(c, B("max"), NULL) == KVSHM_OK &&
          kvshm_remove(c, B("once"), NULL) == KVSHM_OK);

    /* contains / remove */
    bool b = false;
    CHECK(kvshm_contains(c, B("child-5"), &b) == KVSHM_OK && b);
    CHECK(kvshm_remove(c, B("child-5"), &b) == KVSHM_OK && b);
    CHECK(kvshm_remove(c, B("child-5"), &b) == KVSHM_OK && !b);
    CHECK(kvshm_remove(c, B("child-6"), NULL) == KVSHM_OK);
    CHECK(kvshm_contains(c, B("child-5"), &b) == KVSHM_OK && !b);

    /* limits */
    CHECK(kvshm_put(c, B("a-key-longer-than-16"), B("v")) == KVSHM_KEY_TOO_LONG);
    char big[100];
    memset(big, 'x', sizeof big);
    CHECK(kvshm_put(c, B("k"), (const uint8_t *)big, 65) == KVSHM_VALUE_TOO_LONG);

    /* batches: all or nothing, snapshot reads, atomic removes */
    kvshm_bytes ks[3] = {{(const uint8_t *)"m1", 2}, {(const uint8_t *)"m2", 2}, {(const uint8_t *)"m3", 2}};
    kvshm_bytes vs[3] = {{(const uint8_t *)"one", 3}, {(const uint8_t *)"two", 3}, {(const uint8_t *)big, 65}};
    CHECK(kvshm_put_many(c, ks, vs, 3) == KVSHM_VALUE_TOO_LONG);
    CHECK(kvshm_contains(c, B("m1"), &b) == KVSHM_OK && !b);
    vs[2].len = 5;
    CHECK(kvshm_put_many(c, ks, vs, 3) == KVSHM_OK);
    kvshm_bytes gk[3] = {{(const uint8_t *)"m1", 2}, {(const uint8_t *)"zz", 2}, {(const uint8_t *)"m3", 2}};
    size_t lens[3], need = 0;
    CHECK(kvshm_get_many(c, gk, 3, buf, 4, lens, &need) == KVSHM_BUFFER_TOO_SMALL && need == 8);
    CHECK(kvshm_get_many(c, gk, 3, buf, sizeof buf, lens, &need) == KVSHM_OK);
    CHECK(lens[0] == 3 && lens[1] == KVSHM_MISSING && lens[2] == 5 && memcmp(buf, "onexxxxx", 8) == 0);
    size_t removed = 0;
    CHECK(kvshm_remove_many(c, gk, 3, &removed) == KVSHM_OK && removed == 2);

    /* stats and verify */
    kvshm_stats s;
    CHECK(kvshm_get_stats(c, &s) == KVSHM_OK);
    CHECK(s.keys == 102 && s.clients == 2 && s.host_pid == (uint64_t)getpid() && s.max_key_len == 16);
    uint64_t problems = 99;
    char report[256];
    CHECK(kvshm_verify(c, &problems, report, sizeof report) == KVSHM_OK && problems == 0);

    /* invalid arguments: NULLs, non-zero lengths with NULL, oversized lengths */
    CHECK(kvshm_put(c, NULL, 3, B("v")) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_put(c, B("k"), NULL, 5) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_put(c, B("k"), (const uint8_t *)"v", (size_t)-1) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_get(c, B("k"), buf, sizeof buf, NULL) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_get(c, B("k"), NULL, 10, &len) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_len(c, NULL) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_put_many(c, NULL, vs, 3) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_client_open(NULL, NULL, &c) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_client_open(name, NULL, NULL) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_client_open("bad/name", NULL, &dup == NULL ? NULL : (kvshm_client **)&dup) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_put(NULL, B("k"), B("v")) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_get_stats(c, NULL) == KVSHM_INVALID_ARGUMENT);

    /* read-only client: reads work, writes are refused */
    kvshm_client *ro = NULL;
    CHECK(kvshm_client_open_read_only(name, NULL, &ro) == KVSHM_OK);
    CHECK(kvshm_get(ro, B("child-1"), buf, sizeof buf, &len) == KVSHM_OK && len == 12);
    CHECK(kvshm_put(ro, B("k"), B("v")) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_client_close(ro) == KVSHM_OK);

    /* use after close, double close */
    CHECK(kvshm_client_close(c) == KVSHM_OK);
    CHECK(kvshm_put(c, B("k"), B("v")) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_client_close(c) == KVSHM_INVALID_ARGUMENT);
    char msg[256];
    CHECK(kvshm_last_error(msg, sizeof msg) > 0 && strstr(msg, "closed") != NULL);

    /* store full, with earlier keys intact */
    kvshm_config small;
    kvshm_config_default(&small);
    small.max_size = 4u << 20;
    small.initial_size = 0;
    small.stripes = 4;
    kvshm_host *h2 = NULL;
    CHECK(kvshm_host_create(name2, &small, &h2) == KVSHM_OK);
    kvshm_client *c2 = NULL;
    CHECK(kvshm_host_client(h2, &c2) == KVSHM_OK);
    static uint8_t chunk[100000];
    kvshm_status r = KVSHM_OK;
    int stored = 0;
    for (; stored < 1000 && r == KVSHM_OK; stored++) {
        char k[32];
        snprintf(k, sizeof k, "full-%d", stored);
        r = kvshm_put(c2, B(k), chunk, sizeof chunk);
    }
    CHECK(r == KVSHM_STORE_FULL);
    CHECK(kvshm_get(c2, B("full-0"), NULL, 0, &len) == KVSHM_BUFFER_TOO_SMALL && len == sizeof chunk);
    /* the same full store under allkeys-lru: puts evict instead of failing */
    uint32_t policy = 9;
    uint64_t evicted = 0;
    CHECK(kvshm_get_eviction(c2, &policy, &evicted) == KVSHM_OK && policy == 0 && evicted == 0);
    CHECK(kvshm_set_eviction(c2, 6) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_set_eviction(c2, 1) == KVSHM_OK);
    for (int i = 0; i < 200; i++) {
        char k[32];
        snprintf(k, sizeof k, "evict-%d", i);
        CHECK(kvshm_put(c2, B(k), chunk, sizeof chunk) == KVSHM_OK);
    }
    CHECK(kvshm_get_eviction(c2, &policy, &evicted) == KVSHM_OK && policy == 1 && evicted >= 150);
    CHECK(kvshm_get(c2, B("evict-199"), NULL, 0, &len) == KVSHM_BUFFER_TOO_SMALL && len == sizeof chunk);
    CHECK(kvshm_client_close(c2) == KVSHM_OK);
    CHECK(kvshm_host_release(h2) == KVSHM_OK);

    /* missing, foreign and symlinked stores */
    CHECK(kvshm_client_open("no-such-store-anywhere", NULL, &c) == KVSHM_STORE_NOT_FOUND);
    char path[300], link[300];
    const char *dir = getenv("KVSHM_DIR") ? getenv("KVSHM_DIR") : "/dev/shm";
    snprintf(path, sizeof path, "%s/kvshm.%s-foreign", dir, name);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 8192; i++) fputc(0x5a, f);
    fclose(f);
    char fname[260];
    snprintf(fname, sizeof fname, "%s-foreign", name);
    CHECK(kvshm_client_open(fname, NULL, &c) == KVSHM_INCOMPATIBLE);
    unlink(path);
    snprintf(path, sizeof path, "%s/kvshm.%s", dir, name);
    snprintf(link, sizeof link, "%s/kvshm.%s-link", dir, name);
    CHECK(symlink(path, link) == 0);
    snprintf(fname, sizeof fname, "%s-link", name);
    CHECK(kvshm_client_open(fname, NULL, &c) == KVSHM_PERMISSION_DENIED);
    unlink(link);

    /* host close keeps the data; open_existing adopts; release removes */
    CHECK(kvshm_client_close(hc) == KVSHM_OK);
    CHECK(kvshm_host_close(host) == KVSHM_OK);
    CHECK(kvshm_host_close(host) == KVSHM_INVALID_ARGUMENT);
    CHECK(kvshm_host_open_existing(name, NULL, &host) == KVSHM_OK);
    CHECK(kvshm_host_client(host, &hc) == KVSHM_OK);
    CHECK(kvshm_get(hc, B("parent-key"), buf, sizeof buf, &len) == KVSHM_OK && len == 12);
    CHECK(kvshm_client_close(hc) == KVSHM_OK);
    CHECK(kvshm_host_release(host) == KVSHM_OK);
    CHECK(kvshm_client_open(name, NULL, &c) == KVSHM_STORE_NOT_FOUND);

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
