// C++ under LD_PRELOAD=libmtalloc.so: operator new and delete (scalar, array, aligned,
// sized), and the standard containers growing and shrinking through them. Prints a
// deterministic summary, identical with and without the preload; with --allocator it
// also says whether mtrace's allocator serves it and whether its heap checks clean.
#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

struct alignas(64) CacheLine {
    uint64_t words[8];
};

struct alignas(4096) PageAligned {
    unsigned char bytes[4096];
};

static int failures = 0;

#define EXPECT(cond)                                                                            \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            std::printf("FAILED: %s (line %d)\n", #cond, __LINE__);                             \
            failures++;                                                                         \
        }                                                                                       \
    } while (0)

static uint64_t checksum(const void *p, size_t n, uint64_t h = 1469598103934665603ull)
{
    const unsigned char *c = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static void scalars_and_arrays()
{
    uint64_t sum = 0;
    for (int round = 0; round < 1000; round++) {
        int *one = new int(round);
        double *many = new double[round % 300 + 1];
        for (int i = 0; i <= round % 300; i++)
            many[i] = i * 0.5;
        sum += *one + static_cast<uint64_t>(many[round % 300]);
        delete one;
        delete[] many;
    }
    std::printf("scalars and arrays: %llu\n", static_cast<unsigned long long>(sum));
}

static void aligned_new()
{
    std::vector<CacheLine *> lines;
    for (int i = 0; i < 500; i++) {
        CacheLine *c = new CacheLine;
        EXPECT(reinterpret_cast<uintptr_t>(c) % 64 == 0);
        c->words[0] = i;
        lines.push_back(c);
    }
    CacheLine *array = new CacheLine[33];
    EXPECT(reinterpret_cast<uintptr_t>(array) % 64 == 0);
    PageAligned *page = new PageAligned;
    EXPECT(reinterpret_cast<uintptr_t>(page) % 4096 == 0);
    std::memset(page->bytes, 7, sizeof page->bytes);
    auto owned = std::make_unique<CacheLine[]>(10);
    EXPECT(reinterpret_cast<uintptr_t>(owned.get()) % 64 == 0);
    std::vector<CacheLine> in_vector(100);
    EXPECT(reinterpret_cast<uintptr_t>(in_vector.data()) % 64 == 0);
    uint64_t sum = 0;
    for (CacheLine *c : lines) {
        sum += c->words[0];
        delete c;
    }
    delete[] array;
    delete page;
    std::printf("aligned new: %llu\n", static_cast<unsigned long long>(sum));
}

static void containers()
{
    std::vector<uint64_t> v;
    for (uint64_t i = 0; i < 2000000; i++)
        v.push_back(i * i);
    v.resize(1000);
    v.shrink_to_fit();
    std::string s;
    for (int i = 0; i < 100000; i++)
        s += static_cast<char>('a' + i % 26);
    std::string big(5000000, 'x');
    s += big.substr(0, 12345);
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 20000; i++)
        m["key-" + std::to_string(i % 5000)].push_back(i);
    std::unordered_map<int, std::string> u;
    for (int i = 0; i < 50000; i++)
        u[i] = std::to_string(i * 3);
    for (int i = 0; i < 50000; i += 2)
        u.erase(i);
    std::vector<std::string> words;
    for (int i = 0; i < 30000; i++)
        words.push_back(std::to_string((i * 7919) % 30011));
    std::sort(words.begin(), words.end());
    uint64_t h = checksum(v.data(), v.size() * sizeof v[0]);
    h = checksum(s.data(), s.size(), h);
    for (const auto &kv : m)
        h = checksum(kv.first.data(), kv.first.size(), h + kv.second.size());
    h = checksum(words.front().data(), words.front().size(), h + u.size());
    std::printf("containers: vector %zu string %zu map %zu unordered %zu words %zu checksum %016llx\n", v.size(),
                s.size(), m.size(), u.size(), words.size(), static_cast<unsigned long long>(h));
}

static void allocator_report()
{
    using check_fn = int (*)();
    auto heap_check = reinterpret_cast<check_fn>(dlsym(RTLD_DEFAULT, "mt_heap_check"));
    if (!heap_check) {
        std::printf("allocator: libc\n");
        return;
    }
    // A block from operator new must be one of mtrace's: its usable size comes from us.
    auto usable = reinterpret_cast<size_t (*)(void *)>(dlsym(RTLD_DEFAULT, "malloc_usable_size"));
    int *probe = new int[10];
    bool ours = usable && usable(probe) >= sizeof(int) * 10;
    delete[] probe;
    std::printf("allocator: mtrace heap_check=%d usable=%s\n", heap_check(), ours ? "ok" : "bad");
}

int main(int argc, char **argv)
{
    scalars_and_arrays();
    aligned_new();
    containers();
    if (argc > 1 && std::strcmp(argv[1], "--allocator") == 0)
        allocator_report();
    std::printf("failures: %d\n", failures);
    return failures ? 1 : 0;
}
