// A small C++ user of the C ABI: RAII around the handles, std::string keys and values.
// Build: c++ -std=c++17 -I bindings/ffi/include example.cpp -L target/release -lkvshm
#include "kvshm.h"

#include <cstdio>
#include <stdexcept>
#include <string>
#include <unistd.h>

class Store {
  public:
    explicit Store(const std::string &name) {
        check(kvshm_host_create(name.c_str(), nullptr, &host_));
        check(kvshm_host_client(host_, &client_));
    }
    ~Store() {
        kvshm_client_close(client_);
        kvshm_host_release(host_);
    }
    void put(const std::string &k, const std::string &v) {
        check(kvshm_put(client_, bytes(k), k.size(), bytes(v), v.size()));
    }
    bool get(const std::string &k, std::string &out) {
        size_t len = 0;
        kvshm_status s = kvshm_get(client_, bytes(k), k.size(), nullptr, 0, &len);
        if (s == KVSHM_NOT_FOUND) return false;
        if (s != KVSHM_BUFFER_TOO_SMALL && s != KVSHM_OK) check(s);
        out.resize(len);
        check(kvshm_get(client_, bytes(k), k.size(), reinterpret_cast<uint8_t *>(&out[0]), len, &len));
        return true;
    }

  private:
    static const uint8_t *bytes(const std::string &s) { return reinterpret_cast<const uint8_t *>(s.data()); }
    static void check(kvshm_status s) {
        if (s != KVSHM_OK) throw std::runtime_error(kvshm_strerror(s));
    }
    kvshm_host *host_ = nullptr;
    kvshm_client *client_ = nullptr;
};

int main() {
    Store store("cpp-example-" + std::to_string(getpid()));
    store.put("greeting", "hello from C++");
    std::string v;
    if (!store.get("greeting", v) || v != "hello from C++") return 1;
    std::printf("greeting = %s\n", v.c_str());
    return 0;
}
