// Compiled by g++ under LD_PRELOAD (cc1plus's new/delete reach malloc through
// libstdc++), then run: its own new/delete go through the library too.
#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

template <typename K, typename V>
struct Index {
    std::map<K, std::vector<V>> by_key;
    void add(const K& k, V v) { by_key[k].push_back(std::move(v)); }
    size_t total() const {
        return std::accumulate(by_key.begin(), by_key.end(), size_t{0},
                               [](size_t a, const auto& kv) { return a + kv.second.size(); });
    }
};

struct Node {
    std::string name;
    std::vector<std::shared_ptr<Node>> kids;
};

static std::shared_ptr<Node> tree(int depth, int width, const std::string& prefix) {
    auto n = std::make_shared<Node>();
    n->name = prefix;
    if (depth > 0)
        for (int i = 0; i < width; i++) n->kids.push_back(tree(depth - 1, width, prefix + "." + std::to_string(i)));
    return n;
}

static size_t count(const std::shared_ptr<Node>& n) {
    size_t c = 1;
    for (auto& k : n->kids) c += count(k);
    return c;
}

int main() {
    Index<std::string, int> idx;
    std::unordered_map<int, std::string> names;
    for (int i = 0; i < 200000; i++) {
        std::string k = "key" + std::to_string(i % 1013);
        idx.add(k, i);
        names[i] = k + "/" + std::to_string(i * 31 % 977);
    }
    std::vector<std::string> v;
    for (auto& [k, s] : names) v.push_back(s);
    std::sort(v.begin(), v.end());
    std::set<std::string> uniq(v.begin(), v.end());
    std::regex re("key(\\d+)7/(\\d+)");
    size_t matches = 0;
    for (size_t i = 0; i < v.size(); i += 7)
        if (std::regex_match(v[i], re)) matches++;
    auto t = tree(6, 5, "root");
    std::ostringstream out;
    out << "entries " << idx.total() << ", keys " << idx.by_key.size() << ", unique " << uniq.size()
        << ", first " << v.front() << ", last " << v.back() << ", matches " << matches
        << ", tree nodes " << count(t);
    std::cout << out.str() << std::endl;
    return 0;
}
