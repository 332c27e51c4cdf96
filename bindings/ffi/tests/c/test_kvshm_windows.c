/* The C ABI on Windows: built with mingw against kvshm.dll (import library libkvshm.dll.a)
 * and run under Wine by ci/windows.sh. Processes sharing a store are started with
 * CreateProcess (Windows has no fork): a child writes keys the parent reads, two children
 * and the parent increment one counter at once, and a child terminated with TerminateProcess
 * while it writes leaves a store that the parent recovers and verifies clean.
 * Usage: test_kvshm_windows <unique-store-name> [writer|incr|loop]
 * Prints one line per failed check and a final "N passed, M failed" line. */
#include "kvshm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

static int passed, failed;
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (cond) {                                                                        \
            passed++;                                                                      \
        } else {                                                                           \
            failed++;                                                                      \
            char msg_[256];                                                                \
            kvshm_last_error(msg_, sizeof msg_);                                           \
            printf("FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, msg_); \
        }                                                                                  \
    } while (0)
#define B(s) (const uint8_t *)(s), strlen(s)

static const char *name;

/* Start this program again as `mode` on the same store. */
static PROCESS_INFORMATION spawn(const char *mode) {
    char self[MAX_PATH], cmd[2 * MAX_PATH];
    GetModuleFileNameA(NULL, self, sizeof self);
    snprintf(cmd, sizeof cmd, "\"%s\" %s %s", self, name, mode);
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    memset(&pi, 0, sizeof pi);
    if (!CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi)) {
        printf("FAILED: CreateProcess %s: error %lu\n", mode, GetLastError());
        exit(2);
    }
    return pi;
}

static DWORD wait_for(PROCESS_INFORMATION pi) {
    DWORD code = 99;
    if (WaitForSingleObject(pi.hProcess, 120000) != WAIT_OBJECT_0) {
        TerminateProcess(pi.hProcess, 98);
    }
    GetExitCodeProcess(pi.hProcess, &code);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    return code;
}

static int child(const char *mode) {
    kvshm_client *c = NULL;
    if (kvshm_client_open(name, NULL, &c) != KVSHM_OK) return 10;
    if (strcmp(mode, "writer") == 0) {
        for (int i = 0; i < 100; i++) {
            char k[32], v[32];
            snprintf(k, sizeof k, "child-%d", i);
            snprintf(v, sizeof v, "from-child-%d", i);
            if (kvshm_put(c, B(k), B(v)) != KVSHM_OK) return 11;
        }
        uint8_t buf[64];
        size_t len = 0;
        if (kvshm_get(c, B("parent-key"), buf, sizeof buf, &len) != KVSHM_OK) return 12;
        if (len != 12 || memcmp(buf, "parent-value", 12) != 0) return 13;
    } else if (strcmp(mode, "incr") == 0) {
        for (int i = 0; i < 1000; i++) {
            int64_t n = 0;
            if (kvshm_incr(c, B("ctr"), 1, &n) != KVSHM_OK) return 14;
        }
    } else if (strcmp(mode, "loop") == 0) {
        /* Writes until it is terminated: values of changing sizes over a few keys. */
        char v[4096];
        for (unsigned i = 0;; i++) {
            char k[32];
            snprintf(k, sizeof k, "loop-%u", i % 50);
            size_t n = 1 + (i * 7919u) % sizeof v;
            memset(v, 'a' + i % 26, n);
            if (kvshm_put(c, (const uint8_t *)k, strlen(k), (const uint8_t *)v, n) != KVSHM_OK)
                return 15;
        }
    } else {
        return 3;
    }
    kvshm_client_close(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <unique-store-name> [writer|incr|loop]\n", argv[0]);
        return 2;
    }
    name = argv[1];
    if (argc > 2) return child(argv[2]);

    kvshm_config cfg;
    CHECK(kvshm_config_default(&cfg) == KVSHM_OK);
    cfg.max_size = 64u << 20;
    cfg.stripes = 64;
    kvshm_host *host = NULL;
    CHECK(kvshm_host_create(name, &cfg, &host) == KVSHM_OK);
    kvshm_host *second = NULL;
    CHECK(kvshm_host_create(name, &cfg, &second) == KVSHM_EXISTS);
    CHECK(kvshm_host_open_existing(name, NULL, &second) == KVSHM_HOST_RUNNING);
    kvshm_client *c = NULL;
    CHECK(kvshm_host_client(host, &c) == KVSHM_OK);

    /* Basic operations and their statuses. */
    CHECK(kvshm_put(c, B("parent-key"), B("parent-value")) == KVSHM_OK);
    uint8_t buf[64];
    size_t len = 0;
    CHECK(kvshm_get(c, B("parent-key"), buf, 4, &len) == KVSHM_BUFFER_TOO_SMALL && len == 12);
    CHECK(kvshm_get(c, B("parent-key"), buf, sizeof buf, &len) == KVSHM_OK && len == 12 &&
          memcmp(buf, "parent-value", 12) == 0);
    CHECK(kvshm_get(c, B("missing"), buf, sizeof buf, &len) == KVSHM_NOT_FOUND);
    const uint8_t bin[] = {0, 255, 0, 1};
    CHECK(kvshm_put(c, bin, sizeof bin, bin, sizeof bin) == KVSHM_OK);
    CHECK(kvshm_get(c, bin, sizeof bin, buf, sizeof buf, &len) == KVSHM_OK && len == 4 &&
          memcmp(buf, bin, 4) == 0);
    bool existed = false;
    CHECK(kvshm_remove(c, bin, sizeof bin, &existed) == KVSHM_OK && existed);

    /* Another process writes, this one reads, and the other way round. */
    CHECK(wait_for(spawn("writer")) == 0);
    int all = 1;
    for (int i = 0; i < 100; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "child-%d", i);
        snprintf(v, sizeof v, "from-child-%d", i);
        all &= kvshm_get(c, B(k), buf, sizeof buf, &len) == KVSHM_OK && len == strlen(v) &&
               memcmp(buf, v, len) == 0;
    }
    CHECK(all);

    /* Three processes increment one counter: no increment is lost. */
    PROCESS_INFORMATION a = spawn("incr"), b = spawn("incr");
    for (int i = 0; i < 1000; i++) {
        int64_t n = 0;
        all &= kvshm_incr(c, B("ctr"), 1, &n) == KVSHM_OK;
    }
    CHECK(all);
    CHECK(wait_for(a) == 0 && wait_for(b) == 0);
    CHECK(kvshm_get(c, B("ctr"), buf, sizeof buf, &len) == KVSHM_OK && len == 4 &&
          memcmp(buf, "3000", 4) == 0);

    /* Writers terminated (TerminateProcess) at arbitrary points of their puts: the parent
     * keeps writing the same keys (taking over locks they held) and the store verifies. */
    for (int round = 0; round < 5; round++) {
        PROCESS_INFORMATION w = spawn("loop");
        Sleep(100 + 37 * round);
        TerminateProcess(w.hProcess, 9);
        CHECK(wait_for(w) == 9);
        for (int i = 0; i < 50; i++) {
            char k[32];
            snprintf(k, sizeof k, "loop-%d", i);
            all &= kvshm_put(c, B(k), B("after")) == KVSHM_OK;
        }
        CHECK(all);
        uint64_t problems = 99;
        char report[512] = "";
        CHECK(kvshm_verify(c, &problems, report, sizeof report) == KVSHM_OK && problems == 0);
        if (problems) printf("verify: %s\n", report);
    }
    CHECK(kvshm_get(c, B("loop-7"), buf, sizeof buf, &len) == KVSHM_OK && len == 5);

    kvshm_stats st;
    CHECK(kvshm_get_stats(c, &st) == KVSHM_OK && st.keys == 152);
    CHECK(kvshm_host_release(host) == KVSHM_OK);
    kvshm_client *gone = NULL;
    kvshm_status r = kvshm_client_open(name, NULL, &gone);
    CHECK(r == KVSHM_STORE_NOT_FOUND);
    if (r != KVSHM_STORE_NOT_FOUND) printf("open after release: %s\n", kvshm_strerror(r));

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
